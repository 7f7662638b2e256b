// Command ifd-cyberjacksim is a pcsc-lite reader driver (an IFD handler) for a virtual Reiner
// SCT cyberJack e-com, built with -buildmode=c-shared and loaded by pcscd through a
// reader.conf.d entry:
//
//	FRIENDLYNAME "REINER SCT cyberJack ecom_a"
//	DEVICENAME   /dev/null:/path/to/control.sock[:no-mkt-comp][:timeout-SECONDS][:firmware-M.m.R]
//	LIBPATH      /path/to/libifd-cyberjacksim.so
//
// pcscd insists that DEVICENAME up to its first colon names an existing file (as vpcd's
// "/dev/null:0x8C7B" does), hence the /dev/null prefix. The driver listens on the control socket
// named after the colon; options follow it, colon-separated (pcscd's configuration lexer refuses
// most punctuation, so no ";" or "="); a test or the simulator panel
// connects there to insert and remove virtual cards and to press the pad's keys (see package
// pinpad/cyberjacksim). The reader logic lives in that package; this file only translates the
// IFD handler calls.
//
// Like libccid for a reader with an interrupt endpoint, the driver gives pcscd a polling
// function (TAG_IFD_POLLING_THREAD_WITH_TIMEOUT) that returns as soon as a card moves or the
// virtual cable is pulled, and a function to stop it (TAG_IFD_STOP_POLLING_THREAD): pcscd then
// learns of a card at once instead of at its next 400 ms poll. It reports THREAD_SAFE 1 and
// SIMULTANEOUS_ACCESS 32, as Reiner's driver does (ifd.cpp), and an unplugged reader answers
// IFD_NO_SUCH_DEVICE, as libccid does for a disconnected one.
//
// Build: go build -buildmode=c-shared -o libifd-cyberjacksim.so ./cmd/ifd-cyberjacksim
package main

/*
#cgo pkg-config: libpcsclite
#include <string.h>
#include <ifdhandler.h>

void *cjsim_polling_function(void);
void *cjsim_stop_polling_function(void);
*/
import "C"

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
)

func main() {}

// channel is one reader pcscd opened.
type channel struct {
	reader   *cyberjacksim.Reader
	listener net.Listener
}

var (
	mu       sync.Mutex
	channels = map[C.DWORD]*channel{}
	log      = newLogger()
)

// newLogger writes to the file named by $CYBERJACKSIM_LOG, or nowhere: pcscd owns stdout.
func newLogger() *slog.Logger {
	if path := os.Getenv("CYBERJACKSIM_LOG"); path != "" {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			return slog.New(slog.NewTextHandler(f, nil))
		}
	}
	return slog.New(slog.DiscardHandler)
}

// readerOf maps a LUN (reader index in the high 16 bits, slot in the low) to its reader.
func readerOf(lun C.DWORD) *cyberjacksim.Reader {
	mu.Lock()
	defer mu.Unlock()
	if ch := channels[lun>>16]; ch != nil {
		return ch.reader
	}
	return nil
}

//export IFDHCreateChannelByName
func IFDHCreateChannelByName(lun C.DWORD, deviceName C.LPSTR) C.RESPONSECODE {
	_, dev, ok := strings.Cut(C.GoString(deviceName), ":")
	if !ok {
		log.Error("DEVICENAME must be /dev/null:SOCKET[:options]", "devicename", C.GoString(deviceName))
		return C.IFD_COMMUNICATION_ERROR
	}
	parts := strings.Split(dev, ":")
	socket := parts[0]
	opts := cyberjacksim.Options{}
	for _, p := range parts[1:] {
		switch {
		case p == "no-mkt-comp":
			opts.NoMKTComp = true
		case strings.HasPrefix(p, "timeout-"):
			s, err := strconv.Atoi(strings.TrimPrefix(p, "timeout-"))
			if err != nil || s <= 0 {
				log.Error("bad DEVICENAME option", "option", p)
				return C.IFD_COMMUNICATION_ERROR
			}
			opts.DefaultTimeout = time.Duration(s) * time.Second
		case strings.HasPrefix(p, "firmware-"):
			fw, err := cyberjacksim.ParseFirmware(strings.TrimPrefix(p, "firmware-"))
			if err != nil {
				log.Error("bad DEVICENAME option", "option", p, "err", err)
				return C.IFD_COMMUNICATION_ERROR
			}
			opts.Firmware = fw
		default:
			log.Error("unknown DEVICENAME option", "option", p)
			return C.IFD_COMMUNICATION_ERROR
		}
	}
	os.Remove(socket) // a socket left by an earlier run
	l, err := net.Listen("unix", socket)
	if err != nil {
		log.Error("listen on control socket", "socket", socket, "err", err)
		return C.IFD_COMMUNICATION_ERROR
	}
	r := cyberjacksim.NewReader(opts)
	mu.Lock()
	if len(channels) > 0 {
		// pcscd loads a driver library once and gives every reader of it the same LUN, so one
		// library can only serve one virtual reader per pcscd.
		mu.Unlock()
		l.Close()
		log.Error("one virtual cyberJack per pcscd: a second reader entry with this driver is refused", "socket", socket)
		return C.IFD_COMMUNICATION_ERROR
	}
	channels[lun>>16] = &channel{reader: r, listener: l}
	mu.Unlock()
	go cyberjacksim.Serve(l, r, loadCard, log)
	log.Info("reader created", "lun", uint64(lun), "socket", socket, "no_mkt_comp", opts.NoMKTComp)
	return C.IFD_SUCCESS
}

//export IFDHCreateChannel
func IFDHCreateChannel(lun C.DWORD, channelID C.DWORD) C.RESPONSECODE {
	log.Error("the virtual cyberJack needs a DEVICENAME naming its control socket")
	return C.IFD_COMMUNICATION_ERROR
}

//export IFDHCloseChannel
func IFDHCloseChannel(lun C.DWORD) C.RESPONSECODE {
	mu.Lock()
	ch := channels[lun>>16]
	delete(channels, lun>>16)
	mu.Unlock()
	if ch != nil {
		ch.listener.Close()
		ch.reader.Remove()
		ch.reader.StopWaiting()
	}
	return C.IFD_SUCCESS
}

// cjsimPolling is the driver's polling function: it returns when a card moved or the cable was
// pulled or put back since pcscd's last presence poll, or after timeout milliseconds.
//
//export cjsimPolling
func cjsimPolling(lun C.DWORD, timeout C.int) C.RESPONSECODE {
	r := readerOf(lun)
	if r == nil {
		return C.IFD_COMMUNICATION_ERROR
	}
	r.WaitEvent(time.Duration(timeout) * time.Millisecond)
	return C.IFD_SUCCESS
}

// cjsimStopPolling ends a cjsimPolling in progress (pcscd removing the reader).
//
//export cjsimStopPolling
func cjsimStopPolling(lun C.DWORD) C.RESPONSECODE {
	if r := readerOf(lun); r != nil {
		r.StopWaiting()
	}
	return C.IFD_SUCCESS
}

// pointerCapability writes a function pointer as a capability's value.
func pointerCapability(length C.PDWORD, value C.PUCHAR, fn unsafe.Pointer) C.RESPONSECODE {
	if *length < C.DWORD(unsafe.Sizeof(fn)) {
		return C.IFD_ERROR_INSUFFICIENT_BUFFER
	}
	*(*unsafe.Pointer)(unsafe.Pointer(value)) = fn
	*length = C.DWORD(unsafe.Sizeof(fn))
	return C.IFD_SUCCESS
}

//export IFDHGetCapabilities
func IFDHGetCapabilities(lun C.DWORD, tag C.DWORD, length C.PDWORD, value C.PUCHAR) C.RESPONSECODE {
	r := readerOf(lun)
	if r == nil {
		return C.IFD_NO_SUCH_DEVICE
	}
	var out []byte
	switch tag {
	case C.TAG_IFD_ATR:
		atr, err := r.ATR()
		if err != nil {
			*length = 0
			return C.IFD_SUCCESS
		}
		out = atr
	case C.TAG_IFD_SLOTS_NUMBER:
		out = []byte{1}
	case C.TAG_IFD_SIMULTANEOUS_ACCESS:
		out = []byte{32} // ifd.cpp: IFDH_MAX_READERS
	case C.TAG_IFD_THREAD_SAFE:
		out = []byte{1}
	case C.TAG_IFD_SLOT_THREAD_SAFE:
		out = []byte{0}
	case C.TAG_IFD_POLLING_THREAD_WITH_TIMEOUT:
		return pointerCapability(length, value, C.cjsim_polling_function())
	case C.TAG_IFD_STOP_POLLING_THREAD:
		return pointerCapability(length, value, C.cjsim_stop_polling_function())
	default:
		return C.IFD_ERROR_TAG
	}
	if C.DWORD(len(out)) > *length {
		return C.IFD_ERROR_INSUFFICIENT_BUFFER
	}
	copyOut(value, out)
	*length = C.DWORD(len(out))
	return C.IFD_SUCCESS
}

//export IFDHSetCapabilities
func IFDHSetCapabilities(lun C.DWORD, tag C.DWORD, length C.DWORD, value C.PUCHAR) C.RESPONSECODE {
	return C.IFD_NOT_SUPPORTED
}

//export IFDHSetProtocolParameters
func IFDHSetProtocolParameters(lun C.DWORD, protocol C.DWORD, flags C.UCHAR, pts1, pts2, pts3 C.UCHAR) C.RESPONSECODE {
	// The virtual card speaks whatever protocol its ATR offers (T=1 for TCOS).
	return C.IFD_SUCCESS
}

//export IFDHPowerICC
func IFDHPowerICC(lun C.DWORD, action C.DWORD, atr C.PUCHAR, atrLength C.PDWORD) C.RESPONSECODE {
	r := readerOf(lun)
	if r == nil {
		return C.IFD_NO_SUCH_DEVICE
	}
	log.Info("power", "action", uint64(action))
	switch action {
	case C.IFD_POWER_DOWN:
		r.PowerDown()
		*atrLength = 0
		if !r.Plugged() {
			return C.IFD_NO_SUCH_DEVICE
		}
		return C.IFD_SUCCESS
	case C.IFD_POWER_UP, C.IFD_RESET:
		r.PowerDown()
		got, err := r.PowerUp()
		if errors.Is(err, cyberjacksim.ErrUnplugged) {
			*atrLength = 0
			return C.IFD_NO_SUCH_DEVICE
		}
		if err != nil {
			*atrLength = 0
			return C.IFD_ERROR_POWER_ACTION
		}
		copyOut(atr, got)
		*atrLength = C.DWORD(len(got))
		return C.IFD_SUCCESS
	}
	return C.IFD_NOT_SUPPORTED
}

//export IFDHTransmitToICC
func IFDHTransmitToICC(lun C.DWORD, sendPci C.SCARD_IO_HEADER, tx C.PUCHAR, txLength C.DWORD, rx C.PUCHAR, rxLength C.PDWORD, recvPci C.PSCARD_IO_HEADER) C.RESPONSECODE {
	r := readerOf(lun)
	if r == nil {
		return C.IFD_NO_SUCH_DEVICE
	}
	resp, err := r.Transmit(C.GoBytes(unsafe.Pointer(tx), C.int(txLength)))
	if err != nil {
		log.Info("transmit", "err", err)
	}
	switch {
	case errors.Is(err, cyberjacksim.ErrUnplugged):
		*rxLength = 0
		return C.IFD_NO_SUCH_DEVICE
	case errors.Is(err, cyberjacksim.ErrNoCard):
		*rxLength = 0
		return C.IFD_ICC_NOT_PRESENT
	case err != nil:
		*rxLength = 0
		return C.IFD_COMMUNICATION_ERROR
	case C.DWORD(len(resp)) > *rxLength:
		*rxLength = 0
		return C.IFD_ERROR_INSUFFICIENT_BUFFER
	}
	copyOut(rx, resp)
	*rxLength = C.DWORD(len(resp))
	return C.IFD_SUCCESS
}

//export IFDHControl
func IFDHControl(lun C.DWORD, code C.DWORD, tx C.PUCHAR, txLength C.DWORD, rx C.PUCHAR, rxLength C.DWORD, returned C.LPDWORD) C.RESPONSECODE {
	*returned = 0
	r := readerOf(lun)
	if r == nil {
		return C.IFD_NO_SUCH_DEVICE
	}
	var in []byte
	if txLength > 0 {
		in = C.GoBytes(unsafe.Pointer(tx), C.int(txLength))
	}
	out, err := r.Control(uint32(code), in, int(rxLength))
	// The structures carry no PIN (the pad inserts it), so logging them is safe and is what
	// field support needs.
	log.Info("control", "code", strconv.FormatUint(uint64(code), 16), "in", hexOf(in), "out", hexOf(out), "err", err)
	switch {
	case errors.Is(err, cyberjacksim.ErrUnplugged):
		return C.IFD_NO_SUCH_DEVICE
	case errors.Is(err, cyberjacksim.ErrUnsupported):
		return C.IFD_NOT_SUPPORTED // ifd.cpp: STATUS_NOT_SUPPORTED → IFD_NOT_SUPPORTED
	case errors.Is(err, cyberjacksim.ErrOutputTooLong):
		return C.IFD_ERROR_INSUFFICIENT_BUFFER
	case errors.Is(err, cyberjacksim.ErrNoCard):
		return C.IFD_ICC_NOT_PRESENT
	case err != nil:
		return C.IFD_COMMUNICATION_ERROR
	}
	copyOut(rx, out)
	*returned = C.DWORD(len(out))
	return C.IFD_SUCCESS
}

//export IFDHICCPresence
func IFDHICCPresence(lun C.DWORD) C.RESPONSECODE {
	r := readerOf(lun)
	if r == nil {
		return C.IFD_NO_SUCH_DEVICE
	}
	present, err := r.Poll()
	switch {
	case err != nil:
		return C.IFD_NO_SUCH_DEVICE
	case present:
		return C.IFD_ICC_PRESENT
	}
	return C.IFD_ICC_NOT_PRESENT
}

func copyOut(dst C.PUCHAR, src []byte) {
	if len(src) > 0 {
		C.memcpy(unsafe.Pointer(dst), unsafe.Pointer(&src[0]), C.size_t(len(src)))
	}
}

func hexOf(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }
