package pcsc

import (
	"context"
	"errors"
	"fmt"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// Survey reads the card in the first reader named prefix (DefaultReader when empty) with
// [tcos.Survey]: no PIN, no slot data, nothing written. The card is connected exclusively and
// reset when the survey ends. [pinpad.ErrNoReader] when no reader matches, [pinpad.ErrNoCard]
// when the reader is empty.
func Survey(ctx context.Context, prefix string, profiles []*tcos.Profile) (*tcos.SurveyReport, error) {
	if prefix == "" {
		prefix = DefaultReader
	}
	sc, err := scard.EstablishContext()
	if err != nil {
		return nil, fmt.Errorf("survey: %w", mapError("connect to pcscd", err))
	}
	defer sc.Release()
	name, err := findReader(sc, prefix)
	if err != nil {
		return nil, fmt.Errorf("survey: %w", err)
	}
	h, err := sc.Connect(name, scard.ShareExclusive, scard.ProtocolAny)
	if errors.Is(err, scard.ErrNoSmartcard) || errors.Is(err, scard.ErrRemovedCard) {
		return nil, fmt.Errorf("survey: %w", pinpad.ErrNoCard)
	}
	if err != nil {
		return nil, fmt.Errorf("survey: %w", mapError("connect to card", err))
	}
	defer h.Disconnect(scard.ResetCard)
	st, err := h.Status()
	if err != nil {
		return nil, fmt.Errorf("survey: %w", mapError("read card status", err))
	}
	rep, err := tcos.Survey(ctx, transport{h: h}, st.Atr, profiles)
	if err != nil {
		return nil, fmt.Errorf("survey: %w", err)
	}
	return rep, nil
}
