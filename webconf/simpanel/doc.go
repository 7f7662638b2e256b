// Package simpanel is WebConf's simulator panel: with the simulator PIN pad (pinpad/sim) every
// page carries a panel marked SIMULATOR with the virtual pad's display and keys and a rack of
// virtual cards to create, insert and remove, so that a whole ceremony can be run in the
// browser. [Panel] is the template the pages' layout includes; [Handlers] serve its forms
// (POST /sim/key, /sim/insert, /sim/remove, /sim/cards) and the rack the page script swaps in
// (GET /sim/rack); [ViewFrom] is the picture of the pad the live view's event stream and the
// API's card answer send.
//
// # What this package must never do
//
// Exist for a real PIN pad: webconf mounts it only when the service runs with the simulator,
// so with a real pad there is no panel and no route that accepts a digit. PIN digits typed on
// the virtual pad travel through the browser — the panel stands in for the physical pad and is
// for demonstrations and tests only; a digit is logged as "digit", never its value. It shows the
// panel only to roles that may operate it.
//
// The design of the whole system is in docs/design.md.
package simpanel
