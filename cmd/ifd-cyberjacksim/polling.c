// The polling functions pcscd asks for with TAG_IFD_POLLING_THREAD_WITH_TIMEOUT and
// TAG_IFD_STOP_POLLING_THREAD are handed over as C function pointers; Go cannot take the address
// of its exported functions, so these two helpers do.
#include <ifdhandler.h>
#include "_cgo_export.h"

void *cjsim_polling_function(void) { return (void *)cjsimPolling; }
void *cjsim_stop_polling_function(void) { return (void *)cjsimStopPolling; }
