package pages

import (
	"fmt"
	"strconv"
	"time"

	"github.com/keyquorum/keyquorum/ceremony"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// liveView is what the live ceremony view shows, rendered into the page at first and then sent
// as JSON with every event. It is built from a ceremony.Event or a Journal, neither of which
// holds a secret.
type liveView struct {
	Seq     uint64 `json:"seq"`
	Active  bool   `json:"active"` // running or stalled: the retry/cancel buttons apply
	Stalled bool   `json:"stalled"`
	// Confirming is a question the pad cannot ask (a real PIN pad does not report its OK key
	// through PC/SC): the OK / Cancel buttons of the live view answer it.
	Confirming bool `json:"confirming"`
	// QuestionID names the question the OK / Cancel buttons answer; Destructive ("1") says its
	// OK destroys data on a card and needs the security key. QuestionText and QuestionDetail
	// say what is asked (also while the pad itself asks).
	QuestionID     string `json:"question_id"`
	Destructive    string `json:"destructive"`
	QuestionText   string `json:"question_text"`
	QuestionDetail string `json:"question_detail"`
	Ceremony       uint64 `json:"ceremony"`
	Kind           string `json:"kind"`
	Operator       string `json:"operator"`
	Status         string `json:"status"`
	Step           string `json:"step"`
	StepText       string `json:"step_text"`
	// Display is the PIN pad's display text.
	Display  string `json:"display"`
	WaitText string `json:"wait_text"`
	// Deadline is when the current wait times out (RFC 3339, "" when nothing runs on a timer);
	// Now is the server's clock, so the countdown does not depend on the browser's.
	Deadline   string `json:"deadline"`
	Now        string `json:"now"`
	Cards      string `json:"cards"` // "1 of 3 cards written"
	CardsDone  int    `json:"cards_done"`
	CardsTotal int    `json:"cards_total"`
	PINTries   string `json:"pin_tries"` // "" when unknown
	Serial     string `json:"serial"`
	Error      string `json:"error"`
	Hint       string `json:"hint"`
	Outcome    string `json:"outcome"`
	Next       string `json:"next"`
	Protocol   string `json:"protocol"` // URL of the printable protocol
}

func liveFromEvent(ev ceremony.Event, now time.Time) liveView {
	v := liveView{
		Seq:        ev.Seq,
		Active:     ev.Status == ceremony.StatusRunning || ev.Status == ceremony.StatusStalled,
		Stalled:    ev.Status == ceremony.StatusStalled,
		Confirming: ev.Waiting == ceremony.WaitConfirm,
		Ceremony:   ev.Ceremony,
		Kind:       ev.Kind.Title(),
		Operator:   ev.Operator,
		Status:     string(ev.Status),
		Step:       string(ev.Step),
		StepText:   stepText(ev.Step),
		Display:    ev.Display,
		WaitText:   waitText(ev.Waiting),
		Deadline:   web.FormatRFC3339(ev.Deadline),
		Now:        web.FormatRFC3339(now),
		CardsDone:  ev.CardsDone,
		CardsTotal: ev.CardsTotal,
		Cards:      cardsText(ev.Phase, ev.CardsDone, ev.CardsTotal),
		Serial:     ev.Serial,
		Error:      ev.Error,
		Hint:       ev.Hint,
		Outcome:    ev.Outcome,
		Next:       nextText(ev.Next),
	}
	if ev.PINTries >= 0 {
		v.PINTries = triesText(ev.PINTries)
	}
	if q := ev.Question; q != nil {
		v.QuestionText, v.QuestionDetail = q.Text, q.Detail
		if ev.Waiting == ceremony.WaitConfirm {
			v.QuestionID = q.ID
			if q.Destructive {
				v.Destructive = "1"
			}
		}
	}
	if ev.Ceremony != 0 {
		v.Protocol = ProtocolURL(ev.Ceremony)
	}
	return v
}

// liveFromJournal describes a ceremony that is not running (nothing is waiting).
func liveFromJournal(j ceremony.Journal, now time.Time) liveView {
	v := liveView{
		Ceremony:   j.ID,
		Kind:       j.Kind.Title(),
		Operator:   j.Operator,
		Status:     string(j.Status),
		Step:       string(j.Step),
		StepText:   stepText(j.Step),
		Now:        web.FormatRFC3339(now),
		Error:      j.LastError,
		Outcome:    j.Outcome,
		Next:       nextText(j.Next),
		Protocol:   ProtocolURL(j.ID),
		CardsTotal: j.N,
	}
	if j.Status == ceremony.StatusDone {
		v.Error = ""
	}
	return v
}

// ProtocolURL is the printable protocol page of ceremony id.
func ProtocolURL(id uint64) string { return "/ceremonies/" + strconv.FormatUint(id, 10) + "/protocol" }

func stepText(s ceremony.Step) string {
	switch s {
	case ceremony.StepIdle, "":
		return "idle"
	case ceremony.StepConfirm:
		return "confirm on the PIN pad (OK to go on, Cancel to stop)"
	case ceremony.StepInsertCard:
		return "insert the card asked for and press OK"
	case ceremony.StepConfirmLast:
		return "the next PIN try is the card's last: press OK only if you are sure of the PIN"
	case ceremony.StepConfirmWrite:
		return "the card holds data that would be overwritten: OK to overwrite, Cancel to keep it"
	case ceremony.StepEnterPIN:
		return "enter the card's PIN on the PIN pad and press OK"
	case ceremony.StepChangePIN:
		return "enter the old PIN, the new PIN and the new PIN again on the PIN pad"
	case ceremony.StepWriteCard:
		return "writing the card and reading it back: leave it in the reader"
	case ceremony.StepReadCard:
		return "reading the card: leave it in the reader"
	case ceremony.StepRemoveCard:
		return "remove the card from the reader"
	case ceremony.StepCombine:
		return "combining the shares"
	case ceremony.StepLoadKey:
		return "loading the key into the HSM"
	case ceremony.StepResetHSM:
		return "zeroizing the HSM"
	case ceremony.StepIssueCred:
		return "issuing the slot credential"
	case ceremony.StepActivate:
		return "activating the PKCS#11 slot"
	case ceremony.StepSplit:
		return "splitting the key again for the new card set"
	case ceremony.StepCheckCard:
		return "checking the card's share: leave it in the reader"
	case ceremony.StepWaitRetry:
		return "stopped: press Retry to repeat the step, or Cancel"
	case ceremony.StepFinished:
		return "finished"
	}
	return string(s)
}

func waitText(w ceremony.Wait) string {
	switch w {
	case ceremony.WaitOK:
		return "waiting for OK or Cancel on the PIN pad"
	case ceremony.WaitCard:
		return "waiting for a card and OK"
	case ceremony.WaitPIN:
		return "waiting for the PIN on the PIN pad"
	case ceremony.WaitRemoval:
		return "waiting for the card to be removed"
	case ceremony.WaitRetry:
		return "waiting for Retry or Cancel (below)"
	case ceremony.WaitConfirm:
		return "the PIN pad cannot report its keys: answer with OK or Cancel below"
	}
	return ""
}

func cardsText(ph ceremony.Phase, done, total int) string {
	if total == 0 {
		return ""
	}
	switch ph {
	case ceremony.PhaseWriting:
		return fmt.Sprintf("%d of %d cards written", done, total)
	case ceremony.PhaseReading, ceremony.PhaseLoading:
		return fmt.Sprintf("%d of %d cards read", done, total)
	}
	return fmt.Sprintf("%d of %d cards done", done, total)
}

func triesText(n int) string {
	switch n {
	case 0:
		return "PIN blocked"
	case 1:
		return "1 PIN try left: the next wrong PIN blocks the card"
	}
	return fmt.Sprintf("%d PIN tries left", n)
}

func nextText(n ceremony.NextAction) string {
	switch n {
	case ceremony.NextResume:
		return "The key is on the cards: resume the ceremony to read them and load the HSM."
	case ceremony.NextRestartRead:
		return "Resume to read the cards again."
	case ceremony.NextReset:
		return "A factory reset is required before a new key generation or load."
	}
	return ""
}
