package ceremony

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"

	"github.com/keyquorum/keyquorum/ceremony/internal/attempt"
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
		if s.Entries == 0 && s.Head != journal.ZeroHash {
			t.Fatalf("empty log with head %s", s.Head)
		}
	})
}

// FuzzDecodeJournal feeds arbitrary bytes to the journal decoder (a damaged database is outside
// data too). Accepted journals must survive a re-encode unchanged in meaning.
func FuzzDecodeJournal(f *testing.F) {
	f.Add([]byte(`{"id":1,"kind":"generate","status":"running","phase":"writing"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := journal.DecodeJournal(data)
		if err != nil {
			return
		}
		raw, err := json.Marshal(j)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		k, err := journal.DecodeJournal(raw)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if k.ID != j.ID || k.Kind != j.Kind || k.Status != j.Status || len(k.Cards) != len(j.Cards) {
			t.Fatalf("round trip changed the journal: %+v → %+v", j, k)
		}
		// Classification of whatever was decoded must not panic.
		_ = attempt.Classify(j, "", nil)
		_ = attempt.Classify(j, j.KeyID, attempt.ErrDeclined)
	})
}

// FuzzDecodeCardSet feeds arbitrary bytes to the card set registry's decoder (a damaged
// database is outside data). An accepted set survives a re-encode, and the questions the
// ceremonies ask of it do not panic.
func FuzzDecodeCardSet(f *testing.F) {
	f.Add([]byte(`{"set_id":"00112233445566778899aabbccddeeff","key_id":"0102030405060708","k":2,"n":3,"status":"current","origin":"generate","created":"2026-05-01T12:00:00Z","shares":[{"index":1,"serial":"A1","authenticator":"00ff"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := journal.DecodeCardSet(data)
		if err != nil {
			return
		}
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		u, err := journal.DecodeCardSet(raw)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if u.SetID != s.SetID || u.Status != s.Status || u.K != s.K || u.N != s.N || len(u.Shares) != len(s.Shares) {
			t.Fatalf("round trip changed the set: %+v → %+v", s, u)
		}
		for i := 0; i <= s.N+1; i++ {
			s.Share(i)
		}
		_ = journal.NewRetiredSetError(s, 1).Error()
		s.SetShare(ShareInfo{Index: 1, Serial: "X"})
	})
}

// FuzzDecodeCheckpoint feeds arbitrary files to the reader of auditor checkpoints (a file an
// auditor hands in). Whatever it accepts is a checkpoint a verification can use: a positive
// seq, a 32-byte hash, and a MAC and key ID that make a MAC message, or neither; it re-encodes
// to a file that decodes to the same checkpoint.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"format":"keyquorum-audit-checkpoint-v1","seq":9,"hash":"` + strings.Repeat("ab", 32) + `","key_id":"0011223344556677","mac":"` + strings.Repeat("cd", 32) + `","time":"2026-11-30T07:00:00Z"}`))
	f.Add([]byte(`{"format":"keyquorum-audit-checkpoint-v1","seq":1,"hash":"` + strings.Repeat("00", 32) + `","time":"2026-11-30T07:00:00Z"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			if !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("error %v is not ErrBadCheckpoint", err)
			}
			return
		}
		if cp.Seq == 0 || len(cp.Hash) != 64 {
			t.Fatalf("accepted %+v", cp)
		}
		if cp.MAC != "" || cp.KeyID != "" {
			if _, err := journal.AuditMACMessage(cp.Seq, cp.Hash, cp.KeyID); err != nil || len(cp.MAC) != 64 {
				t.Fatalf("accepted %+v: %v", cp, err)
			}
		}
		again, err := json.Marshal(cp)
		if err != nil {
			t.Fatal(err)
		}
		cp2, err := DecodeCheckpoint(again)
		if err != nil || cp2.Seq != cp.Seq || cp2.Hash != cp.Hash || cp2.MAC != cp.MAC || cp2.KeyID != cp.KeyID || !cp2.Time.Equal(cp.Time) {
			t.Fatalf("re-encoded %s decodes to %+v, %v", again, cp2, err)
		}
	})
}

// FuzzDecodeSets feeds arbitrary bytes to the decoder of a card set registry taken from a
// cluster peer. An accepted registry encodes to a registry that decodes to the same sets.
func FuzzDecodeSets(f *testing.F) {
	f.Add([]byte(`{"format":1,"sets":[{"set_id":"00112233445566778899aabbccddeeff","key_id":"0102030405060708","k":2,"n":3,"status":"current","origin":"generate","created":"2026-05-01T12:00:00Z","shares":[{"index":1,"serial":"A1","authenticator":"00ff"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sets, err := journal.DecodeSets(data)
		if err != nil {
			return
		}
		raw, err := journal.EncodeSets(sets)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := journal.DecodeSets(raw)
		if err != nil || len(again) != len(sets) {
			t.Fatalf("re-decode: %d sets, %v (had %d)", len(again), err, len(sets))
		}
		raw2, _ := journal.EncodeSets(again)
		if string(raw2) != string(raw) {
			t.Fatalf("encoding not stable:\n%s\n%s", raw, raw2)
		}
	})
}
