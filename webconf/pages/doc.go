// Package pages is the part of WebConf operators see in the browser: the status page, the key
// setup wizard, the live view of a ceremony, the smart card tools (PIN change, copy, re-issue,
// card check, the card survey, Prepare cards), the HSM page (backup download, restore upload, key load), the audit log and the
// printable ceremony protocol, factory reset and the cluster page — their handlers, their templ
// templates, and the one script and style sheets, embedded in the binary and served from
// /static (the appliance is offline, and the CSP allows no inline script). The account and
// operator management pages are in pages/account, built on this package's frame: [Renderer]
// ([Renderer.Page], [Renderer.HTML], [Renderer.Problem]), [Page], [Layout], [CSRFInput].
//
// # The live view
//
// /events is a server-sent event stream ([EventStream]): every ceremony.Event (the PIN-pad
// display, the step, cards done of n, the deadline of the current wait, PIN tries left, the
// problem and its hint) in words for the operator, and, in simulator mode, every change of the
// virtual pad. The script updates the page in place and counts down the current wait; any number
// of browsers may watch. A stream ends when its request's context ends or the server stops.
//
// # Forms
//
// Every form carries the CSRF token ([CSRFInput]; a multipart upload as its leading field, never
// in its URL). The token rotates: a page rendered now carries the current period's.
// Before a form that does a dangerous action is sent, the page script asks
// /webauthn/assert/begin whether it needs a security key and, if so, sends the token of the
// assertion with it. Every error is a page that says what happened and what to do next
// (web.Problem); a request of the page script gets the same problem as JSON.
//
// # What this package must never do
//
// Hold or show a secret: it never sees the MBK or a share (the ceremony keeps them), never asks
// for a PIN in a form (PINs are typed on the pad), never puts key material in a page, an event,
// a log line or an error. It never sequences ceremony steps itself: it forwards the operator's
// commands to the ceremony manager and renders its events. It decides no access: the server's
// middleware has checked the certificate, the CSRF token, the role and the approval before a
// handler runs.
//
// The design of the whole system is in docs/design.md.
package pages
