// Package attempt runs one attempt of a ceremony: the goroutine ([Run]) that drives the PIN pad,
// the cards and the HSM through the steps of its kind, commits every transition to the journal
// before the next card or HSM operation, stalls for a retry, asks its questions, and commits how
// it ended ([Classify], [Host.CommitEnd]).
//
// Files, from the bottom up: steps.go (commit a transition with its audit entry, prompt on the
// pad, wait for OK or an answer on the screen, take a card, verify a PIN, refuse a card, stall);
// overwrite.go (the question before a card's share is overwritten); the kinds (generate.go,
// cards.go, cardcheck.go, reissue.go, prepare.go); run.go (start and end of an attempt, dispatch
// to the kinds); host.go (what the Manager shares with an attempt).
//
// Package ceremony's Manager owns the [Host] (the devices, the journal's store, the event
// broker and the current attempt) and starts attempts with [Host.Launch]; nothing else
// imports this package. It reads the records of package journal and the vocabulary of package
// api unqualified (dot imports): they are the language every kind is written in.
//
// # What this room must never do
//
// Write key material, a share or a PIN anywhere: not to the journal, the audit log, an event,
// an error or a log line. The MBK and shares are []byte, zeroed as soon as they are no longer
// needed; PINs are typed on the pad and never reach the host. Talk to a card, the pad or the HSM
// inside a journal transaction, or before the transition that announces the operation is
// committed. Import package ceremony (the Manager reaches an attempt only through [Host] and
// the exported fields of [Run]).
package attempt
