package pcsc

import (
	"context"
	"errors"
	"fmt"
	"slices"

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

// ErrReaderBusy is a survey asked for while a ceremony holds the card.
var ErrReaderBusy = errors.New("the card is in use by a ceremony: survey it when the ceremony has ended")

// SurveyCard surveys the card in the terminal's reader against the shipped profiles and the
// terminal's own (see [Survey]); [ErrReaderBusy] while a card session is open.
func (t *Terminal) SurveyCard(ctx context.Context) (*tcos.SurveyReport, error) {
	t.mu.Lock()
	busy := t.active != nil
	t.mu.Unlock()
	if busy {
		return nil, ErrReaderBusy
	}
	ps := tcos.Profiles()
	if !slices.ContainsFunc(ps, func(q *tcos.Profile) bool { return q.Name == t.profile.Name }) {
		ps = append(ps, t.profile)
	}
	return Survey(ctx, t.prefix, ps)
}
