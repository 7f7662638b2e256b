// Package api holds the vocabulary that package ceremony's Manager, the attempts that run its
// ceremonies (package attempt) and ceremony's callers share: the [Config] a Manager is built
// from and the [Pad] and [HSM] it drives, the [Event]s a ceremony publishes with the [Broker]
// that fans them out, and the errors a caller tests for.
//
// Package ceremony names every exported identifier of this package for its callers
// (ceremony.Event is [Event], ceremony.ErrBadRequest is [ErrBadRequest], …): nothing outside
// package ceremony imports this one. It imports only package journal (for the records an event
// carries) and the device contracts (hsm, pinpad).
//
// # What this room must never do
//
// Run a ceremony, touch the journal or talk to a device: it is types, texts and the broker.
// Put a secret into an event or an error text: an event is shown to every subscriber, an error
// to the operator and the log.
package api
