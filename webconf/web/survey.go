package web

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// SurveyTimeout bounds one card survey: a few dozen reads.
const SurveyTimeout = 30 * time.Second

// SurveyCard surveys the card in the reader for the Smart cards page and the API: refused
// while a ceremony runs (it holds the reader) or without a surveyor; a problem the operator can
// act on otherwise (no card, no reader).
func SurveyCard(ctx context.Context, s CardSurveyor, records CeremonyRecords, back string) (*tcos.SurveyReport, *Problem) {
	if s == nil {
		return nil, &Problem{Status: http.StatusNotImplemented, Code: CodeNotAvailable, Title: "No card survey here",
			What: "This service was started without a card reader it can survey.", Todo: "Run keyquorum card survey on the appliance.", Back: back}
	}
	if ov, err := records.Overview(ctx); err == nil && ov.Running != nil {
		return nil, &Problem{Status: http.StatusConflict, Code: CodeBusy, Title: "The reader is in use",
			What: "A ceremony is running and holds the card reader.", Todo: "Survey the card when the ceremony has ended.", Back: back}
	}
	ctx, cancel := context.WithTimeout(ctx, SurveyTimeout)
	defer cancel()
	rep, err := s.SurveyCard(ctx)
	switch {
	case err == nil:
		return rep, nil
	case errors.Is(err, pinpad.ErrNoCard):
		return nil, &Problem{Status: http.StatusConflict, Code: CodeBadRequest, Title: "No card in the reader", What: err.Error(),
			Todo: "Insert the card into the PIN pad, then survey it again.", Back: back}
	case errors.Is(err, pinpad.ErrNoReader), errors.Is(err, pinpad.ErrReaderGone):
		return nil, &Problem{Status: http.StatusServiceUnavailable, Code: CodeNotAvailable, Title: "No card reader", What: err.Error(),
			Todo: "Plug the PIN pad in (keyquorum reader diagnose shows what the service sees), then survey again.", Back: back}
	case errors.Is(err, pinpad.ErrCardRemoved):
		return nil, &Problem{Status: http.StatusConflict, Code: CodeBadRequest, Title: "The card was removed", What: err.Error(),
			Todo: "Leave the card in the reader until the survey has ended, then survey again.", Back: back}
	}
	p := For(err, back)
	if p.Code == "" || p.Code == CodeInternal {
		p.Status, p.Code, p.Title = http.StatusConflict, CodeBusy, "The card could not be surveyed"
		p.Todo = "If a ceremony just ended, wait a moment and survey again; keyquorum card survey on the appliance shows more."
	}
	return nil, &p
}
