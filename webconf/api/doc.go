// Package api is the JSON API of the `keyquorum` command line, under /api/v1 on the same mTLS
// listener as the pages and behind the same middleware: the client certificate names the
// operator, the role table decides, and a dangerous action needs an approval in the
// operator.ApprovalHeader, made on the operator's account page with a security key for exactly
// this request (its JSON fields and query parameters, an upload's SHA-256 in
// operator.ContentDigestHeader, which the middleware checks the body against at its end): a
// request without one is refused once
// and waits there, by a short ID and in words (code approval_required). The
// handlers: status (with the HSM's keys), the running ceremony and its events as JSON lines,
// start / cancel / retry / answer / resume a ceremony, backup and restore, audit verify (with an
// auditor's checkpoint), export and checkpoint, the card in the simulator's reader, the card
// survey (no PIN, nothing written), the operator list and roles, and cluster onboarding (node
// certificates, the state for a joining node, the join; package cluster).
//
// Requests and answers are the exported *Request and *JSON types; a body is decoded strictly
// (unknown fields and trailing data are refused). Every refusal is a JSON problem
// ({"code", "title", "what", "todo"}, web.APIProblem) with a stable code a script may test
// (web.CodeOf); the command line maps codes to its exit statuses. A request whose action depends
// on its body (POST /api/v1/ceremony/start) is checked after the body is, with the server's
// Authorize, before anything starts — a typo costs no approval. The API's CSRF rule (JSON or a
// backup only, no cookies) is the middleware's (webconf).
//
// # What this package must never do
//
// Accept or return a secret: PINs are typed on the pad, backups are encrypted under the MBK,
// and a node file's password is answered once and kept nowhere. Change anything before the
// request and the operator's right to it are checked. Register a route without an entry in the
// server's route table (it would be refused to everybody).
//
// The design of the whole system is in docs/design.md.
package api
