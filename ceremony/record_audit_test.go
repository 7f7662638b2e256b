package ceremony

import (
	"errors"
	"strings"
	"testing"
)

func TestRecordAudit(t *testing.T) {
	e := newEnv(t)
	if err := e.m.RecordAudit("CN=admin", "operator.role", "CN=bob given the role custodian"); err != nil {
		t.Fatal(err)
	}
	bad := []struct{ op, event, msg string }{
		{"", "operator.role", "x"},
		{"CN=admin", "", "x"},
		{"CN=admin", "Operator.Role", "x"},
		{"CN=admin", "operator role", "x"},
		{"CN=admin", strings.Repeat("a", 65), "x"},
		{"CN=admin", AuditFactoryReset, "a forged reset"},
		{"CN=admin", AuditKeyLoaded, "a forged load"},
		{"CN=admin", "operator.role", ""},
		{"CN=admin", "operator.role", "two\nlines"},
		{"CN=admin", "operator.role", strings.Repeat("m", 1025)},
	}
	for _, b := range bad {
		if err := e.m.RecordAudit(b.op, b.event, b.msg); !errors.Is(err, ErrBadAuditEvent) && !errors.Is(err, ErrBadOperator) {
			t.Errorf("RecordAudit(%q, %q, %q) = %v, want refused", b.op, b.event, b.msg, err)
		}
	}
	all, err := e.m.AuditLog(0)
	if err != nil {
		t.Fatal(err)
	}
	var found []AuditEntry
	for _, a := range all {
		if a.Event == "operator.role" || a.Event == AuditFactoryReset || a.Event == AuditKeyLoaded {
			found = append(found, a)
		}
	}
	if len(found) != 1 || found[0].Operator != "CN=admin" || found[0].Ceremony != 0 || found[0].Message != "CN=bob given the role custodian" {
		t.Fatalf("recorded entries %+v", found)
	}
	// Every committed entry is also one structured log line, for log shippers.
	if logs := string(e.logs.Bytes()); !strings.Contains(logs, "audit_event=operator.role") || !strings.Contains(logs, `msg="CN=bob given the role custodian"`) {
		t.Errorf("the audit entry is not a log line:\n%s", logs)
	}
	if strings.Contains(string(e.logs.Bytes()), "a forged reset") {
		t.Error("a refused audit entry was logged")
	}
	// It is part of the chain: the log verifies, and survives a restart.
	if _, err := e.m.VerifyAudit(); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if _, err := e.m.VerifyAudit(); err != nil {
		t.Fatal(err)
	}
	m := e.m
	e.close()
	if err := m.RecordAudit("CN=admin", "operator.role", "after close"); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v", err)
	}
	e.open()
}
