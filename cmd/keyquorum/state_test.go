package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/api"
)

// `ceremony state` of a stalled ceremony says why it stalled and what to do, not only the step.
func TestCeremonyStateShowsStallReason(t *testing.T) {
	ev := &ceremony.Event{Kind: ceremony.KindLoad, Ceremony: 7, Status: ceremony.StatusStalled, Step: ceremony.StepWaitRetry,
		Waiting: ceremony.WaitRetry, PINTries: -1, Error: "the PIN pad timed out waiting for the operator",
		Hint: "press Retry to repeat this step (cards already done stay done), or Cancel; 1 of the 2 cards needed were read: 1 more needed"}
	var b bytes.Buffer
	printCeremonyState(&b, api.CeremonyStateJSON{Running: ev})
	out := b.String()
	for _, want := range []string{"load #7, stalled, step wait-retry", "problem:            the PIN pad timed out", "what to do:         press Retry", "1 more needed", "keyquorum ceremony retry"} {
		if !strings.Contains(out, want) {
			t.Errorf("state lacks %q:\n%s", want, out)
		}
	}
}

// A refused card's line never shows PIN tries; a PIN entry's does.
func TestWatchLinePINTries(t *testing.T) {
	refused := ceremony.Event{Kind: ceremony.KindLoad, Ceremony: 1, Step: ceremony.StepEnterPIN, PINTries: 0,
		Error: "card 01 refused: the PIN is blocked after too many wrong entries"}
	if l := eventLine(refused); strings.Contains(l, "PIN tries left") {
		t.Errorf("refused card: %q", l)
	}
	entry := ceremony.Event{Kind: ceremony.KindLoad, Ceremony: 1, Step: ceremony.StepEnterPIN, Display: "Enter PIN", Waiting: ceremony.WaitPIN, PINTries: 2}
	if l := eventLine(entry); !strings.Contains(l, "(2 PIN tries left)") {
		t.Errorf("PIN entry: %q", l)
	}
}

// A question on the screen shows in ceremony state and watch with the command that answers it,
// naming its ID, and the approval a destructive OK needs.
func TestQuestionShownWithItsAnswerCommand(t *testing.T) {
	ev := &ceremony.Event{Kind: ceremony.KindCopyCard, Ceremony: 4, Status: ceremony.StatusRunning, Step: ceremony.StepConfirmWrite,
		Waiting: ceremony.WaitConfirm, PINTries: -1, Display: "Overwrite share 1 of set in use? OK/Cancel",
		Question: &ceremony.Question{ID: "c4-q1", Text: "Overwrite share 1 of set in use? OK/Cancel", Detail: "card 01 holds share 1 of the current set", Destructive: true}}
	var b bytes.Buffer
	printCeremonyState(&b, api.CeremonyStateJSON{Running: ev})
	for _, out := range []string{b.String(), eventLine(*ev)} {
		if !strings.Contains(out, "keyquorum ceremony answer ok|cancel c4-q1") || !strings.Contains(out, "ceremony.answer-destructive") ||
			!strings.Contains(out, "card 01 holds share 1") {
			t.Errorf("question not shown with its answer:\n%s", out)
		}
	}
}
