package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/cluster"
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

// NoCertificate is the page of a request without a client certificate: how to install one.
func NoCertificate(p *operator.PKI) Problem {
	return Problem{Status: http.StatusUnauthorized, Code: CodeNoCertificate, Title: "Client certificate required",
		What: "WebConf only serves operators who present a client certificate of this appliance's management CA (or of a CA configured with --ca-bundle). Your browser sent none.",
		// Names only, no paths: whoever asks without a certificate learns nothing of the
		// appliance's file system.
		Todo: fmt.Sprintf("Import the administrator certificate (%s, with its password in %s, in the webconf directory of the appliance's data directory; keyquorum serve prints where) into your browser, or a certificate your administrator issued to you, then reload this page. The CA certificate is at /ca.pem; its SHA-256 fingerprint is %s.",
			operator.AdminP12File, operator.AdminPasswordFile, p.Fingerprint())}
}

// TooLarge is an upload over limit bytes.
func TooLarge(limit int64) Problem {
	return Problem{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Title: "Upload too large",
		What: fmt.Sprintf("The request is larger than the %s WebConf accepts.", ByteSize(limit)),
		Todo: "Check that you chose the right file (a Keyquorum backup). A backup larger than this limit can be restored with a larger --max-upload."}
}

// NotFound is a page that does not exist.
func NotFound() Problem {
	return Problem{Status: http.StatusNotFound, Title: "Page not found",
		What: "There is no page at this address.", Todo: "Use the menu at the top to find what you were looking for."}
}

// BadForm is a form that cannot be accepted; what says why.
func BadForm(what string) Problem {
	return Problem{Status: http.StatusBadRequest, Title: "Form not accepted", What: what,
		Todo: "Go back, correct the form and send it again."}
}

// For explains an error of the ceremony manager or the HSM.
// ErrContentDigest is an upload whose body is not the file its content digest (and so its
// approval) names.
var ErrContentDigest = errors.New("the upload is not the file its approval names: its SHA-256 differs from the " + operator.ContentDigestHeader + " header")

func For(err error, back string) Problem {
	p := Problem{Status: http.StatusInternalServerError, Title: "Operation failed", What: err.Error(), Back: back,
		Todo: "Check the service log for details, then try again."}
	var busy *ceremony.BusyError
	var pending *ceremony.PendingError
	var foreign *hsm.ForeignKeyError
	var backupErr *hsm.BackupError
	var content *hsm.ContentError
	var mbe *http.MaxBytesError
	var incomplete *hsm.IncompleteBackupError
	var pendingRestore *hsm.PendingRestoreError
	switch {
	case errors.Is(err, ErrContentDigest):
		p.Status, p.Title = http.StatusUnprocessableEntity, "Upload does not match its approval"
		p.Code = CodeContentMismatch
		p.Todo = "Nothing was changed. Send the file that was approved, or run the command again with this file and approve that request."
	case errors.As(err, &incomplete):
		p.Status, p.Title = http.StatusUnprocessableEntity, "Backup refused: objects in the HSM cannot be carried"
		p.Code = CodeBackupIncomplete
		p.Todo = "Nothing was written. A backup that silently lacked these objects would be worse than none. Make them extractable where their owner allows it, or ask explicitly for a backup that skips them (HSM page: tick \"skip the objects that cannot leave\"; command line: keyquorum backup --skip-uncarried): its header then lists them, and a restore shows them."
	case errors.As(err, &pendingRestore):
		p.Status, p.Title = http.StatusConflict, "A restore of another backup stopped half-way"
		p.Code = CodeRestorePending
		p.Todo = "Run the restore of that backup again to finish it first (the message names it by ID, node and time); then restore this one."
	case errors.Is(err, hsm.ErrInvalidLabel), errors.Is(err, hsm.ErrInvalidID), errors.Is(err, hsm.ErrUnknownKind),
		errors.Is(err, hsm.ErrImport):
		p.Status, p.Title = http.StatusBadRequest, "Object not accepted"
		p.Code = CodeBadObject
		p.Todo = "Nothing was stored. Correct the kind, label (1 to 64 bytes of printable UTF-8), ID (at most 64 bytes, hex) or file, and try again."
	case errors.Is(err, hsm.ErrObjectExists):
		p.Status, p.Title = http.StatusConflict, "An object of that identity exists"
		p.Code = CodeObjectExists
		p.Todo = "Nothing was stored. Choose another label or ID: a restore matches objects by class, type, ID and label, so two of one identity would be ambiguous."
	case errors.As(err, &busy):
		p.Status, p.Title, p.Back = http.StatusConflict, "A ceremony is already running", "/ceremony"
		p.Code = CodeBusy
		p.Todo = "Only one ceremony runs at a time (there is one PIN pad). Follow it on the live view, or cancel it there, then start again."
	case errors.As(err, &pending):
		p.Status, p.Title = http.StatusConflict, "An interrupted ceremony needs attention first"
		p.Code = CodePending
		if pending.Pending.Next == ceremony.NextReset {
			p.Title = "A factory reset is required first"
		}
		p.Todo = pending.Todo()
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
	case errors.Is(err, ceremony.ErrStaleAnswer):
		p.Status, p.Title, p.Back = http.StatusConflict, "That question is no longer asked", "/ceremony"
		p.Code = CodeStaleAnswer
		p.Todo = "Your answer was not taken: it named a question that was answered already, ran out or was replaced. Read what the live view asks now and answer that."
	case errors.Is(err, ceremony.ErrStepUpRequired):
		p.Status, p.Title, p.Back = http.StatusForbidden, "Security key confirmation required", "/ceremony"
		p.Code = CodeApprovalRequired
		p.Todo = "OK to this question destroys data on a card: confirm it with your security key (the live view asks for it; the command line needs --approval for ceremony.answer-destructive)."
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

// ByteSize says a size for an operator: 64 MiB, 12 KiB, 300 bytes.
func ByteSize(n int64) string { return cluster.ByteSize(n) }

// API error codes: stable identifiers a script may test. The HTTP status goes with them.
const (
	CodeNoCertificate    = "no_certificate"          // 401: no client certificate
	CodeRevoked          = "revoked"                 // 403: the certificate was revoked
	CodeNoRole           = "no_role"                 // 403: trusted, but no role yet
	CodeNotAllowed       = "not_allowed"             // 403: the role may not do this
	CodeApprovalRequired = "approval_required"       // 403: a dangerous action without a valid approval
	CodeRegisterKey      = "register_key"            // 403: the operator has no security key yet
	CodeCSRF             = "csrf"                    // 403: the request failed a CSRF check
	CodeNotNode          = "not_node"                // 403: the cluster state is for node certificates only
	CodeNodeCertificate  = "node_certificate"        // 403: a node certificate is not an operator
	CodeRecoveryCode     = "recovery_code"           // 403: a key after a recovery needs the console's code
	CodeKeyNotAllowed    = "key_not_allowed"         // 403: the attestation policy refuses this security key's model
	CodeBadRequest       = "bad_request"             // 400: the body or parameters are not acceptable
	CodeNotFound         = "not_found"               // 404
	CodeTooLarge         = "too_large"               // 413: the upload is over the limit
	CodeBusy             = "busy"                    // 409: a ceremony is running
	CodePending          = "pending"                 // 409: an interrupted ceremony needs resume or reset
	CodeKeyLoaded        = "key_loaded"              // 409: the HSM holds a master backup key already
	CodeNoBackupKey      = "no_backup_key"           // 409: no master backup key is loaded
	CodeNotRunning       = "not_running"             // 409: no ceremony runs
	CodeNotStalled       = "not_stalled"             // 409: the ceremony does not wait for a retry
	CodeNotAsking        = "not_asking"              // 409: the ceremony asks no question
	CodeStaleAnswer      = "stale_answer"            // 409: the answer names a question no longer asked
	CodeNothingToResume  = "nothing_to_resume"       // 409
	CodeForeignKey       = cluster.ProblemForeignKey // 422: a backup or peer of another master backup key
	CodeBadBackup        = "bad_backup"              // 422: damaged, truncated or not a backup; nothing changed
	CodeContentMismatch  = "content_mismatch"        // 422: the upload is not the file its approval names; nothing changed
	CodeAuditBroken      = "audit_broken"            // 409: the audit chain does not verify
	CodePeer             = "peer"                    // 502: the cluster peer could not be reached or refused
	CodeNotAvailable     = "not_available"           // 501: not possible with this appliance's pad
	CodeStopping         = "stopping"                // 503: the service is shutting down
	CodeUnavailable      = "unavailable"             // 503: busy for the moment (e.g. too many pending confirmations): try again shortly
	CodeTooMany          = "too_many"                // 429: too many live streams of one operator
	CodeMisdirected      = "misdirected"             // 421: opened at another name or port than the one security keys are bound to
	CodeInternal         = "internal"                // 500
	CodeBackupIncomplete = "backup_incomplete"       // 422: objects cannot be carried; nothing written
	CodeRestorePending   = "restore_pending"         // 409: another backup's restore stopped half-way
	CodeBadObject        = "bad_object"              // 400: an object to create or import is not acceptable
	CodeObjectExists     = "object_exists"           // 409: an object of that identity exists
	CodeNotSupported     = "not_supported"           // 501: this HSM cannot do it
	CodeStaleState       = "stale_state"             // 409: a peer's cluster state older than this node's, or in conflict; nothing changed
	CodeNoPeer           = "no_peer"                 // 409: this node joined no peer to sync from
	CodeBadState         = "bad_state"               // 422: a peer's cluster state damaged or not authenticated; nothing changed
)

// NotSupported is a request this appliance's HSM cannot serve.
func NotSupported(what string) Problem {
	return Problem{Status: http.StatusNotImplemented, Code: CodeNotSupported, Title: "Not possible with this HSM",
		What: "This appliance's HSM cannot " + what + ".", Todo: "Use the tools of the HSM itself."}
}

// ClassName names an object class for the API: "private-key", "public-key", "secret-key",
// "certificate", "data".
func ClassName(class uint32) string {
	switch class {
	case hsm.ClassPrivateKey:
		return "private-key"
	case hsm.ClassPublicKey:
		return "public-key"
	case hsm.ClassSecretKey:
		return "secret-key"
	case hsm.ClassCertificate:
		return "certificate"
	case hsm.ClassData:
		return "data"
	}
	return fmt.Sprintf("class-0x%x", class)
}

// APIProblem is the body of every API error.
type APIProblem struct {
	Code  string `json:"code"`
	Title string `json:"title"`
	What  string `json:"what"`
	Todo  string `json:"todo"`
}

func (p *APIProblem) Error() string {
	if p.What != "" {
		return p.Title + ": " + p.What
	}
	return p.Title
}

// CodeOf is a problem's API code: the one it names, else one that follows from its status.
func CodeOf(p Problem) string {
	if p.Code != "" {
		return p.Code
	}
	switch p.Status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeNoCertificate
	case http.StatusForbidden:
		return CodeNotAllowed
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusServiceUnavailable:
		return CodeUnavailable // a stopping service says CodeStopping itself
	case http.StatusMisdirectedRequest:
		return CodeMisdirected
	}
	return CodeInternal
}

// Revoked is the page of a revoked certificate; by names who revoked it.
func Revoked(id operator.Identity, by string) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeRevoked, Title: "Certificate revoked",
		What: fmt.Sprintf("The client certificate %s (serial %s) was revoked by %s; WebConf no longer accepts it.", id.Subject, id.Serial, by),
		Todo: "Remove this certificate from your browser or card and ask a WebConf administrator for a new one."}
}

// RegisterKey is the page of an operator without a security key who tries a dangerous action.
func RegisterKey(op operator.Caller, a operator.Action, rpID string) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeRegisterKey, Title: "Register a security key first",
		What: fmt.Sprintf("To %s WebConf needs, besides your certificate, a confirmation with your security key (WebAuthn), and you have registered none yet.", operator.RuleOf(a).What),
		Todo: fmt.Sprintf("Open your account page, register your security key (a FIDO2 key with a PIN or fingerprint), then try again. The page must be opened at https://%s — the name WebConf's security keys are bound to.", rpID),
		Back: "/account"}
}

// NeedAssertion is a dangerous action without a valid token of a fresh assertion made for it.
func NeedAssertion(a operator.Action, err error) Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeApprovalRequired, Title: "Security key confirmation required",
		What: fmt.Sprintf("To %s WebConf needs a fresh confirmation with your security key, made for this very action: %v.", operator.RuleOf(a).What, err),
		Todo: "Go back and press the button again: your browser then asks for your security key and its PIN or fingerprint. From the command line, pass an approval made on your account page (it is valid for 5 minutes, for one action)."}
}

// ApproveRequest is the refusal of a command-line request that needs an approval: the request
// waits as pr on the operator's account page, named by its ID and in words, for an approval of
// exactly it. err says what was wrong with the approval sent (none, used, another request's);
// sent reports whether one was sent at all.
func ApproveRequest(pr operator.PendingRequest, err error, sent bool) Problem {
	what := fmt.Sprintf("This command would %s. That needs an approval with your security key, made for this very request", pr.Summary())
	if sent {
		what += fmt.Sprintf(", and the approval sent does not do: %v", err)
	}
	return Problem{Status: http.StatusForbidden, Code: CodeApprovalRequired, Title: "Approval required: request " + pr.ID,
		What: what + ".",
		Todo: fmt.Sprintf("Open your account page in WebConf (/account), find request %s under \"Command-line requests waiting for your approval\", check that it says what you meant, press Approve and use your security key. Then run the same command again with --approval and the token the page shows (within %s; the request waits %s).",
			pr.ID, Minutes(operator.CLIGrantTTL), Minutes(operator.RequestTTL))}
}

// ForAuth explains an error of the operator list, or any other as problemFor does.
func ForAuth(err error, back string) Problem {
	p := Problem{Status: http.StatusConflict, What: err.Error(), Back: back}
	switch {
	case errors.Is(err, operator.ErrLastAdmin):
		p.Title, p.Todo = "The last administrator keeps the admin role", "Give another operator the admin role first; then this one can lose it."
	case errors.Is(err, operator.ErrNoSuchOperator):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such operator", "Reload the Operators page: an operator appears there once their certificate has opened WebConf."
	case errors.Is(err, operator.ErrNoSuchKey):
		p.Status, p.Title, p.Todo = http.StatusNotFound, "No such security key", "Reload the page and choose a key from the list."
	case errors.Is(err, operator.ErrKeyRegistered):
		p.Title, p.Todo = "Security key registered already", "This key is registered already (for you or another operator). Use another key, or remove it there first."
	case errors.Is(err, operator.ErrNoSuchCert):
		p.Status, p.Title, p.Todo = http.StatusBadRequest, "No such certificate", "Give the serial number in hexadecimal, as the Operators page lists it."
	default:
		return For(err, back)
	}
	return p
}

// NoRole is the page of a trusted certificate no administrator has given a role yet.
func NoRole(op operator.Caller) Problem {
	who := op.Name
	if op.Ident.Issuer != "" {
		who += ", issued by " + op.Ident.Issuer
	}
	return Problem{Status: http.StatusForbidden, Code: CodeNoRole, Title: "No role yet",
		What: fmt.Sprintf("Your certificate is trusted, but no WebConf administrator has given it a role, so WebConf shows you nothing but your account page. You are %s (operator ID %s).", who, op.ID),
		Todo: "Ask a WebConf administrator to give you a role (admin, custodian or auditor) on the Operators page, where you are listed under this name. Once you have one, register your security key on your account page.",
		Back: "/account"}
}

// NodeNotOperator is the page of a cluster node's certificate anywhere but the cluster state.
func NodeNotOperator() Problem {
	return Problem{Status: http.StatusForbidden, Code: CodeNodeCertificate, Title: "A node certificate is not an operator",
		What: "This certificate was issued for a cluster node to take over this node's state; it opens nothing else, and it is not an operator's account.",
		Todo: "Use it only for keyquorum cluster join on the new node. To operate WebConf, use an operator's certificate."}
}

// NotAllowed is the page of an operator whose role does not allow an action.
func NotAllowed(op operator.Caller, a operator.Action) Problem {
	r := operator.RuleOf(a)
	var who []string
	for _, role := range r.Roles {
		who = append(who, role.String())
	}
	return Problem{Status: http.StatusForbidden, Title: "Not allowed for your role",
		What: fmt.Sprintf("Your role is %s; only the role %s may %s.", op.Role, strings.Join(who, " or "), r.What),
		Todo: "Ask a WebConf administrator if your role should change. Administrators run the ceremonies, restores, cluster joins and factory resets; custodians use the smart card tools on their own cards; auditors read the audit log and the protocols."}
}

// ForJoin explains a failed join.
func ForJoin(err error, back string) Problem {
	var pe *cluster.PeerError
	var stale *cluster.StaleStateError
	switch {
	case errors.As(err, &stale):
		title := "The peer's state is older than this node's"
		if stale.Conflict || stale.Diverged {
			title = "This node's and the peer's state conflict"
		}
		return Problem{Status: http.StatusConflict, Code: CodeStaleState, Title: title, What: stale.Error(), Todo: stale.Todo(), Back: back}
	case errors.Is(err, cluster.ErrNoPeer):
		return Problem{Status: http.StatusConflict, Code: CodeNoPeer, Title: "No peer to sync from", What: err.Error(),
			Todo: "Join a node of the cluster first (Cluster page or keyquorum cluster join); its node is then synced from.", Back: back}
	case errors.Is(err, cluster.ErrSnapshot), errors.Is(err, cluster.ErrSnapshotForged):
		return Problem{Status: http.StatusUnprocessableEntity, Code: CodeBadState, Title: "The peer's state was not taken", What: err.Error() + ". Nothing changed.",
			Todo: "Check that the peer runs the same keyquorum version and holds this cluster's key, then sync again.", Back: back}
	}
	if errors.As(err, &pe) {
		p := Problem{Status: http.StatusBadGateway, Code: CodePeer, Title: pe.Title, What: pe.What, Todo: pe.Todo, Back: back}
		if pe.ForeignKey {
			p.Status, p.Code = http.StatusUnprocessableEntity, CodeForeignKey
		}
		return p
	}
	return For(err, back)
}
