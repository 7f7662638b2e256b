package main

import (
	"github.com/keyquorum/keyquorum/pinpad/cyberjacksim"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// loadCard opens a virtual TCOS card file (made by pinpad/vcard, the same card the simulator
// and cmd/cardsim serve). Changes the host makes are saved to the file before the card answers.
func loadCard(path string) (cyberjacksim.Card, error) {
	return vcard.Load(path)
}
