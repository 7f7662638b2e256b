// Package webconf is the room operators see: WebConf, the HTTPS service through which they
// start and watch the key ceremonies, download and restore HSM backups, work with smart cards,
// read the audit log and print a ceremony's protocol.
//
// # Authentication and request hygiene
//
//   - HTTPS only, TLS 1.3. On first start [LoadPKI] creates a management CA (ECDSA P-256), a
//     server certificate for 127.0.0.1, ::1, localhost and the configured host names, and the
//     first administrator's client certificate as a PKCS#12 file with a random password in a
//     0600 file beside it. The CA certificate is downloadable at /ca.pem.
//   - Every page needs a TLS client certificate that chains to the management CA or to a
//     configured CA bundle (e.g. the corporate CA of operators' PIV cards). A certificate of
//     another CA fails the TLS handshake; a request without a certificate gets a page that says
//     how to install one (only /ca.pem, /crl.pem and the static files are served to it). The
//     certificate's subject, with its UPN or e-mail subject alternative name in brackets, is
//     the operator's name: the ceremony journal and the audit log record it.
//   - Revocation is checked on every request, not only at the handshake (connections live
//     long): the management CA's revocations (made on the Operators page, kept in the operator
//     list, published as /crl.pem) and, for a bundle CA, the CRL file configured for it
//     (--crl), read again whenever it changes. A CA whose CRL is unusable or past its next
//     update has its certificates refused until a current one is installed (fail closed).
//
// # Operators and roles
//
// [Operators] is the operator list, a bbolt file of its own beside the management PKI (its
// schema is drawn on the type). An operator is keyed by a hash of the certificate's issuer and
// subject ([Identity.ID]): a renewed certificate is the same operator, the same subject from
// another CA is not. Roles: admin (ceremonies, restore, cluster join, factory reset, operator
// management), custodian (the smart card tools — change PIN, copy — on their own card, which
// they prove by its PIN on the pad; steering a running ceremony), auditor (read-only: status,
// audit log, protocols). The first administrator's certificate, made at the first start, is
// given the admin role; any other trusted certificate is recorded on first sight with no role
// and sees only a page saying so and its account page until an administrator gives it one.
// The last administrator cannot lose the role. Every route has an entry in the rule table of
// roles.go (a route without one is refused to everybody); a handler of the JSON API that learns
// its action only from the body maps to actionInHandler there and calls Server.authorize with
// it (role check and, for a dangerous action, the approval) before doing anything. The JSON API
// lives under [APIPrefix]: a POST there must be JSON (or a backup, application/octet-stream,
// bounded by [Config.MaxUpload]) and needs no CSRF token (a browser cannot send either
// cross-site without a preflight; the origin checks still apply), and every problem is answered
// as JSON with a stable code ([APIProblem]); GET /api/v1/operators and POST
// /api/v1/operators/role manage the operator list from the command line, api.go serves the
// status, ceremonies, events, backup, restore, audit and card info of `keyquorum` CLI, and
// cluster.go the node certificates and the state transfer of cluster onboarding. Role changes, security key
// registrations and removals, certificate issuance and revocation, and command-line approvals
// are written to the ceremony audit log ([AuditRecorder]).
//
// # Security keys: the fresh assertion of a dangerous action
//
// Starting any ceremony (and resuming one), restoring a backup, joining a cluster, a factory
// reset and operator management need, on top of the certificate, a fresh WebAuthn assertion
// with user verification (github.com/go-webauthn/webauthn) — seed 000's certificate + FIDO2,
// so that a stolen, unlocked laptop is not enough. The relying party ID is the configured host
// name (the first --host DNS name, default localhost); a page opened at another name, or over
// another port, gets a page saying where to open it instead.
//
//   - Registration: each operator registers one or more security keys on their account page.
//     The first needs only the certificate (the bootstrap: the first administrator registers a
//     key before any dangerous action is possible, and every page tells them to until they
//     have); every further key needs an assertion with a registered one, so a stolen
//     certificate cannot add its thief's key. An administrator can remove an operator's keys
//     (a lost key); the operator then registers anew. When every administrator has lost their
//     key, a start with [Config.RecoverAdmin] (serve --recover-admin, which needs access to the
//     appliance) gives the first administrator's certificate the admin role again without keys.
//   - Pages: before a form that does a dangerous action is sent, the page script asks
//     /webauthn/assert/begin (with the form's path and fields) whether it needs an assertion;
//     if so the browser asks for the key, /webauthn/assert/finish checks the assertion and
//     returns a token, and the form goes out with it (field or URL parameter "webauthn"). A
//     token is random, kept only as a hash, bound to one operator and one action, valid once
//     and for two minutes.
//   - The command line cannot ask for a security key. An operator approves a command-line
//     action on their account page (an assertion, as above); the page shows the token once,
//     valid for five minutes and one action of that kind. The CLI sends it in the
//     [ApprovalHeader] with a certificate of the same operator; the approval is audited when
//     it is made, and the action when it runs. A command without one gets the refusal that
//     says how to make one.
//
// # Operator certificates
//
// Administrators issue client certificates of the management CA from the Operators page: a new
// P-256 key, a PKCS#12 file under a random one-time password that is shown once, downloadable
// once by the issuing administrator within ten minutes, never written to disk. They revoke
// certificates there too (not the one their own browser uses).
//   - Every POST passes two CSRF checks: [net/http.CrossOriginProtection] (Sec-Fetch-Site /
//     Origin, what current browsers send) and a token bound to the client certificate
//     (HMAC under a key made at start), for browsers that send neither header.
//   - Request bodies are bounded ([net/http.MaxBytesReader]): forms to 64 KiB, a backup upload
//     to [Config.MaxUpload].
//   - Security headers on every response: a CSP that allows only this origin's script and style
//     (no inline script: the one script is embedded in the binary and served from /static, since
//     the appliance is offline), X-Frame-Options DENY, nosniff, no referrer, no caching.
//   - Every error is a page that says what happened and what to do next.
//
// # The live view
//
// /events is a server-sent event stream: every [ceremony.Event] (the PIN-pad display, the step,
// cards done of n, the deadline of the current wait, PIN tries left, the problem and its hint)
// and, in simulator mode, every change of the virtual pad. The small script updates the page in
// place and counts down the current wait; any number of browsers may watch. A stream ends when
// its request's context ends or the server stops.
//
// # The simulator panel
//
// With the simulator PIN pad (pinpad/sim) every page carries a panel marked SIMULATOR: the
// virtual pad's display and keys and a rack of virtual cards to create, insert and remove. PIN
// digits typed on that virtual pad travel through the browser: the panel stands in for the
// physical pad and is for demonstrations and tests only. With a real PIN pad there is no panel
// and no route that accepts a digit.
//
// # What this room must never do
//
// Hold or show a secret: it never sees the MBK or a share (the ceremony keeps them), never asks
// for a PIN in a form (PINs are typed on the pad), never puts key material in a page, an event,
// a log line or an error. It never lets a dangerous action through on a certificate alone, and
// never stores a step-up token or an issued private key (a PKCS#12 file waits in memory for its
// one download; its password is shown once and kept nowhere). It never sequences ceremony steps itself: it forwards the operator's
// commands to the ceremony manager and renders its events.
package webconf
