package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/webconf/operator"
)

// Problem is an error page: what happened and what to do about it, in words for an operator.
type Problem struct {
	Status int
	Title  string
	What   string
	Todo   string
	// Back is where the page's button leads ("" = the status page).
	Back string
	// Code is the stable API error code of the JSON form ("" = one that follows from Status;
	// see [CodeOf]).
	Code string
}

// WriteProblem answers with p as JSON: {"code", "title", "what", "todo"} (see [APIProblem]).
func WriteProblem(w http.ResponseWriter, p Problem) {
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(map[string]string{"code": CodeOf(p), "title": p.Title, "what": p.What, "todo": p.Todo})
}

// FetchHeader marks a request sent by the page script; problems are answered as JSON then.
const FetchHeader = "X-Keyquorum-Fetch"

func NoCertificate(p *operator.PKI) Problem {
	return Problem{Status: http.StatusUnauthorized, Code: CodeNoCertificate, Title: "Client certificate required",
		What: "WebConf only serves operators who present a client certificate of this appliance's management CA (or of a CA configured with --ca-bundle). Your browser sent none.",
		Todo: fmt.Sprintf("Import the administrator certificate %s into your browser (its password is in %s on the appliance), or a certificate your administrator issued to you, then reload this page. The CA certificate is at /ca.pem; its SHA-256 fingerprint is %s.",
			p.AdminP12Path(), p.AdminPasswordPath(), p.Fingerprint())}
}

func TooLarge(limit int64) Problem {
	return Problem{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Title: "Upload too large",
		What: fmt.Sprintf("The request is larger than the %s WebConf accepts.", ByteSize(limit)),
		Todo: "Check that you chose the right file (a Keyquorum backup). A backup larger than this limit can be restored with a larger --max-upload."}
}

func NotFound() Problem {
	return Problem{Status: http.StatusNotFound, Title: "Page not found",
		What: "There is no page at this address.", Todo: "Use the menu at the top to find what you were looking for."}
}

func BadForm(what string) Problem {
	return Problem{Status: http.StatusBadRequest, Title: "Form not accepted", What: what,
		Todo: "Go back, correct the form and send it again."}
}

// For explains an error of the ceremony manager or the HSM.
func For(err error, back string) Problem {
	p := Problem{Status: http.StatusInternalServerError, Title: "Operation failed", What: err.Error(), Back: back,
		Todo: "Check the service log for details, then try again."}
	var busy *ceremony.BusyError
	var pending *ceremony.PendingError
	var foreign *hsm.ForeignKeyError
	var backupErr *hsm.BackupError
	var content *hsm.ContentError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &busy):
		p.Status, p.Title, p.Back = http.StatusConflict, "A ceremony is already running", "/ceremony"
		p.Code = CodeBusy
		p.Todo = "Only one ceremony runs at a time (there is one PIN pad). Follow it on the live view, or cancel it there, then start again."
	case errors.As(err, &pending):
		p.Status, p.Title = http.StatusConflict, "An interrupted ceremony needs attention first"
		p.Code = CodePending
		p.Todo = "See the status page: resume the interrupted ceremony, or do a factory reset if it says one is required."
	case errors.Is(err, ceremony.ErrKeyLoaded):
		p.Status, p.Title = http.StatusConflict, "A master backup key is already loaded"
		p.Code = CodeKeyLoaded
		p.Todo = "Nothing to generate: the HSM holds its key. Use the HSM page for backups; a new key needs a factory reset first, which makes every existing backup unreadable."
	case errors.Is(err, ceremony.ErrNothingToResume):
		p.Status, p.Title = http.StatusConflict, "Nothing to resume"
		p.Code = CodeNothingToResume
		p.Todo = "No interrupted ceremony waits to be resumed. See the status page for what the last ceremony left."
	case errors.Is(err, ceremony.ErrNotRunning):
		p.Status, p.Title, p.Back = http.StatusConflict, "No ceremony is running", "/ceremony"
		p.Code = CodeNotRunning
		p.Todo = "The ceremony has ended already; the live view shows its outcome."
	case errors.Is(err, ceremony.ErrNotStalled):
		p.Status, p.Title, p.Back = http.StatusConflict, "The ceremony is not waiting for a retry", "/ceremony"
		p.Code = CodeNotStalled
		p.Todo = "Retry is only possible after a step timed out or the reader was disconnected. Follow the PIN pad's prompt."
	case errors.Is(err, ceremony.ErrNotAsking):
		p.Status, p.Title, p.Back = http.StatusConflict, "The ceremony is not asking a question", "/ceremony"
		p.Code = CodeNotAsking
		p.Todo = "OK and Cancel on this page answer only what the PIN pad cannot ask itself. Follow the live view."
	case errors.Is(err, ceremony.ErrBadRequest), errors.Is(err, ceremony.ErrBadOperator):
		p.Status, p.Title = http.StatusBadRequest, "Request not accepted"
		p.Code = CodeBadRequest
		p.Todo = "Go back, correct the values and try again."
	case errors.Is(err, ceremony.ErrClosed):
		p.Status, p.Title = http.StatusServiceUnavailable, "The service is stopping"
		p.Code = CodeStopping
		p.Todo = "Wait for the service to start again, then reload."
	case errors.Is(err, hsm.ErrNoBackupKey), errors.Is(err, ceremony.ErrNoKey):
		p.Status, p.Title = http.StatusConflict, "No master backup key is loaded"
		p.Code = CodeNoBackupKey
		p.Todo = "Run the key generation (setup) or a key load with the cards first; backups are encrypted under that key."
	case errors.As(err, &foreign):
		p.Status, p.Title = http.StatusUnprocessableEntity, "Backup of another key"
		p.Code = CodeForeignKey
		p.Todo = "This backup was made under another master backup key. Load that key set's cards on a reset appliance, or choose a backup of this appliance's key."
	case errors.As(err, &backupErr), errors.As(err, &content):
		p.Status, p.Title = http.StatusUnprocessableEntity, "Backup not accepted"
		p.Code = CodeBadBackup
		p.Todo = "Nothing was changed. Check that the file is a complete, unaltered Keyquorum backup of this kind of HSM and upload it again."
	case errors.As(err, &mbe):
		return TooLarge(mbe.Limit)
	}
	return p
}

func ByteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
