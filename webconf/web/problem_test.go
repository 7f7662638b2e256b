package web

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony"
)

// A refusal says what is really pending: a factory reset is never called a resume; a stale or
// unconfirmed answer says so.
func TestProblemForCeremonyRefusals(t *testing.T) {
	reset := &ceremony.PendingError{Op: "resume ceremony", Pending: ceremony.Pending{Ceremony: 3, Kind: ceremony.KindGenerate, Next: ceremony.NextReset,
		Message: "Key generation was interrupted while writing the cards. A factory reset is required."}}
	p := For(reset, "/")
	if p.Status != http.StatusConflict || p.Code != CodePending || p.Title != "A factory reset is required first" ||
		!strings.Contains(p.Todo, "factory reset is required") || strings.Contains(p.Todo, "Resume") || strings.Contains(p.Todo, "resume the") {
		t.Errorf("reset pending: %+v", p)
	}
	resume := &ceremony.PendingError{Op: "start ceremony", Pending: ceremony.Pending{Ceremony: 4, Kind: ceremony.KindLoad, Next: ceremony.NextRestartRead}}
	if p := For(resume, "/"); !strings.Contains(p.Todo, "Resume the interrupted key load #4") {
		t.Errorf("resume pending: %+v", p)
	}
	stale := fmt.Errorf("answer: %w", &ceremony.StaleAnswerError{Answered: "c1-q1"})
	if p := For(stale, "/ceremony"); p.Status != http.StatusConflict || p.Code != CodeStaleAnswer {
		t.Errorf("stale answer: %+v", p)
	}
	if p := For(ceremony.ErrStepUpRequired, "/ceremony"); p.Status != http.StatusForbidden || p.Code != CodeApprovalRequired {
		t.Errorf("step-up: %+v", p)
	}
}
