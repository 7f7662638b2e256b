// Package webconf is WebConf, the HTTPS service through which operators start and watch the
// key ceremonies, download and restore HSM backups, work with smart cards, manage operators,
// read the audit log and onboard cluster nodes — in the browser or with the `keyquorum` command
// line. This package only assembles the server: TLS, the middleware, the route table, and the
// rooms it mounts. The rooms are packages of their own, each with its doc:
//
//	webconf/operator        management PKI, CRLs, operator list, identities, roles, WebAuthn
//	                        step-ups and approvals, issued certificates (no pages)
//	webconf/web             what the rooms share: problems and their API codes, JSON answers,
//	                        the services they are built on
//	webconf/simpanel        the simulator panel (only with the simulator pad)
//	webconf/api             the command line's JSON API under /api/v1
//	webconf/pages           the pages, their templates, the live view, the page script
//	webconf/pages/account   the account page, security key endpoints, operator management
//	cluster (top level)     cluster onboarding: node certificates, the state transfer
//
// Imports run one way, downwards: webconf imports every room; pages/account imports pages; api
// and pages import simpanel; simpanel imports web; web imports operator and cluster; operator
// and cluster import no room (cluster no package of webconf at all). A room imports only rooms
// below it, and only what they export.
//
// # Authentication and request hygiene
//
//   - HTTPS only, TLS 1.3, with the management PKI's server certificate ([Server.TLSConfig]).
//   - Every page needs a TLS client certificate that chains to the management CA or to a
//     configured CA bundle. A certificate of another CA fails the handshake; a request without
//     one gets a page that says how to install one (only /ca.pem, /crl.pem and the static files
//     are served to it, and a cluster peer's offer, POST /api/v1/cluster/offer: a node ID and a
//     version, on which this node pulls from the peer it joined over mutual TLS, if at all; no
//     CSRF check applies to it, since it carries no credential and grants nothing).
//   - Revocation is checked on every request, not only at the handshake (connections live
//     long): [operator.Auth.Admit] refuses a certificate the management CA revoked or a
//     configured CRL lists, and every certificate of a CA whose CRL is unusable (fail closed).
//   - Every POST passes two CSRF checks: [net/http.CrossOriginProtection] (Sec-Fetch-Site /
//     Origin) and a token bound to the client certificate (HMAC under a key derived per
//     12-hour period from a key kept beside the management PKI: accepted in its period and the
//     next, so it rotates and a leaked one ages out), for browsers that send neither header. A POST under /api/ must instead be
//     JSON or a backup (application/octet-stream) without cookies: a browser cannot send either
//     cross-site without a CORS preflight, which WebConf never grants.
//   - Request bodies are bounded ([net/http.MaxBytesReader]): forms to 64 KiB, a backup upload
//     to [Config.MaxUpload]. A refused request (no certificate, revoked, …) is answered and its
//     connection closed without reading its body.
//   - Every connection has deadlines (handshake and headers, body, each write, idle; an
//     operator's upload and streams extend theirs while they make progress), at most
//     [Config.MaxConnections] are served at once, and one operator holds at most eight live
//     streams (deadlines.go, streams.go).
//   - A cluster node's certificate is no operator: it reaches the cluster challenge and state
//     only, and is never recorded in the operator list.
//   - Security headers on every response: a CSP that allows only this origin's script and style
//     (no inline script), X-Frame-Options DENY, nosniff, no referrer, no caching.
//   - A panic in a handler is an error page, not a dropped connection.
//
// # The route table
//
// Every route has an entry in routeActions (routeactions.go) that names its action; a route
// without one is refused to everybody, so a new page cannot be reached before someone decides
// who may use it. The middleware lets a request through only if the operator's role allows the
// action and, for a dangerous one (a ceremony, a resume, a restore, a cluster join, operator
// management), the request carries the token of a fresh security key assertion made for that
// action and its details (operator.Details: the form's fields, or the API request's JSON fields
// and query parameters, which protect keeps for this check) — from the page script, or a
// command-line approval in operator.ApprovalHeader. An API request without one is kept as a
// pending request its operator approves on the account page. A
// handler of the API that learns its action only from the body maps to actionInHandler and
// calls the server's authorize itself before doing anything.
//
// # What this package must never do
//
// Hold or show a secret: it never sees the MBK or a share, never asks for a PIN, never logs a
// token. Let a request reach a handler before the certificate, the revocation, the CSRF checks,
// the body limit and the role rule (with the approval of a dangerous action) have passed. Mount
// the simulator panel with a real PIN pad. Sequence ceremony steps: the ceremony manager does.
//
// The design of the whole system is in docs/design.md.
package webconf
