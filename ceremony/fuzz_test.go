package ceremony

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzVerifyAuditExport feeds arbitrary files to the verifier of exported audit logs (an
// auditor's file is outside data). It must never panic, and whatever it accepts must be a chain
// it can account for: as many entries as non-empty lines, each re-verifying alone as a prefix.
func FuzzVerifyAuditExport(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("{}\n"))
	f.Add([]byte("\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := VerifyAuditExport(bytes.NewReader(data))
		if err != nil {
			return
		}
		lines := 0
		for _, l := range strings.Split(string(data), "\n") {
			if strings.TrimSuffix(l, "\r") != "" {
				lines++
			}
		}
		if s.Entries != uint64(lines) {
			t.Fatalf("accepted %d entries from %d lines", s.Entries, lines)
		}
		if s.Entries == 0 && s.Head != zeroHash {
			t.Fatalf("empty log with head %s", s.Head)
		}
	})
}

// FuzzDecodeJournal feeds arbitrary bytes to the journal decoder (a damaged database is outside
// data too). Accepted journals must survive a re-encode unchanged in meaning.
func FuzzDecodeJournal(f *testing.F) {
	f.Add([]byte(`{"id":1,"kind":"generate","status":"running","phase":"writing"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := decodeJournal(data)
		if err != nil {
			return
		}
		raw, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		k, err := decodeJournal(raw)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if k.ID != j.ID || k.Kind != j.Kind || k.Status != j.Status || len(k.Cards) != len(j.Cards) {
			t.Fatalf("round trip changed the journal: %+v → %+v", j, k)
		}
		// Classification of whatever was decoded must not panic.
		_ = classify(j, "", nil)
		_ = classify(j, j.KeyID, errDeclined)
	})
}
