// Package web is what every room of WebConf shares about answering a request, so that the
// server (webconf), the JSON API (webconf/api), the pages (webconf/pages) and the simulator
// panel (webconf/simpanel) need not import one another.
//
//   - [Problem]: an error said for an operator — what happened, what to do next, where the
//     button leads — with its stable API code ([CodeOf], the Code* constants). The pages render
//     it as an error page; the page script and the command line get its JSON form
//     ([WriteProblem], [APIProblem]). [For], [ForAuth] and [ForJoin] explain the errors of the
//     ceremony manager, the HSM, the operator list and cluster onboarding; the other
//     constructors the refusals of the middleware (no certificate, revoked, no role, not
//     allowed, a security key needed).
//   - The services the rooms are built on ([CeremonyRunner], [CeremonyRecords], [AuditReader],
//     [BackupHSM]; *ceremony.Manager and every hsm.HSM implement them) and [Appliance], whose
//     [PadStatus] says whether a PC/SC PIN pad is connected now.
//   - Small answers: [WriteJSON], [RedirectBack] after a form (204 for the page script),
//     [LocalPath] (a redirect target on this server only), the formats of times, sizes and
//     durations; the checks of a key setup's quorum and label ([ParseQuorum]) and the phrase a
//     factory reset is confirmed with ([ResetPhrase]).
//
// # What this package must never do
//
// Put a secret into a problem: its texts go to pages, JSON answers and logs, so they carry
// operator names, key IDs, card serials and what to do — never a key, a share or a PIN. It
// registers no route and renders no page.
//
// The design of the whole system is in docs/design.md.
package web
