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
//     how to install one (only /ca.pem and the static files are served to it). The
//     certificate's subject is the operator: the ceremony journal and the audit log record it.
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
// a log line or an error. It never sequences ceremony steps itself: it forwards the operator's
// commands to the ceremony manager and renders its events.
package webconf
