package ceremony

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Protocol is the printable record of one ceremony for sign-off: who took part, which cards
// were used for what, when, and how it ended, with the audit entries that back it and the hash
// of the audit log's last entry when it was assembled (writing that hash on paper anchors the
// log: entries removed later are found by comparing).
type Protocol struct {
	Journal      Journal
	Participants []string // every operator who acted, in order of first appearance
	Audit        []AuditEntry
	AuditHead    string // hash of the last entry of the whole log
	AuditEntries uint64 // entries in the whole log
	Printed      time.Time
}

// Protocol assembles the protocol of ceremony id.
func (m *Manager) Protocol(id uint64) (*Protocol, error) {
	p := &Protocol{Printed: time.Now().UTC()}
	err := m.h.St.View(func(tx *bolt.Tx) error {
		j, err := journal.LoadJournal(tx, id)
		if err != nil {
			return err
		}
		p.Journal = *j
		if p.Audit, err = journal.AuditEntries(tx, func(e *AuditEntry) bool { return e.Ceremony == id }); err != nil {
			return err
		}
		var head journal.AuditHead
		if _, err := journal.GetJSON(tx.Bucket(journal.BucketMeta), journal.KeyAuditHead, &head); err != nil {
			return err
		}
		p.AuditHead, p.AuditEntries = head.Hash, head.Seq
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("assemble protocol of ceremony %d: %w", id, err)
	}
	add := func(op string) {
		if op != "" && !slices.Contains(p.Participants, op) {
			p.Participants = append(p.Participants, op)
		}
	}
	add(p.Journal.Operator)
	for _, pt := range p.Journal.Participants {
		add(pt.Operator)
	}
	for _, e := range p.Audit {
		add(e.Operator)
	}
	return p, nil
}

// WriteText renders the protocol as plain text for printing, with lines for signatures.
func (p *Protocol) WriteText(w io.Writer) error {
	j := &p.Journal
	var b strings.Builder
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	fmt.Fprintf(&b, "KEYQUORUM CEREMONY PROTOCOL\n\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Ceremony\t#%d, %s\n", j.ID, j.Kind.Title())
	fmt.Fprintf(tw, "Status\t%s\n", j.Status)
	fmt.Fprintf(tw, "Started\t%s by %s\n", ts(j.Started), j.Operator)
	fmt.Fprintf(tw, "Ended\t%s\n", ts(j.Ended))
	if j.K > 0 {
		fmt.Fprintf(tw, "Quorum\t%d of %d\n", j.K, j.N)
	}
	if j.SetID != "" {
		fmt.Fprintf(tw, "Card set\t%s\n", j.SetID)
	}
	if j.KeyID != "" {
		fmt.Fprintf(tw, "Key ID\t%s\n", j.KeyID)
	}
	if j.FromSetID != "" {
		fmt.Fprintf(tw, "Replaces set\t%s (%d of %d)\n", j.FromSetID, j.FromK, j.FromN)
	}
	if j.Check != nil {
		fmt.Fprintf(tw, "Verdict\t%s (card %s)\n", j.Check.Verdict, j.Check.Serial)
	}
	if j.Request.Label != "" {
		fmt.Fprintf(tw, "Label\t%s\n", j.Request.Label)
	}
	if j.Attempt > 1 {
		fmt.Fprintf(tw, "Attempts\t%d\n", j.Attempt)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nOutcome: %s\n", j.Outcome)
	if j.LastError != "" && j.Status != StatusDone {
		fmt.Fprintf(&b, "Last error: %s\n", j.LastError)
	}
	if len(j.Unusable) > 0 {
		fmt.Fprintf(&b, "Unusable cards: %s\n", strings.Join(j.Unusable, ", "))
	}

	fmt.Fprintf(&b, "\nCards\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  serial\tshare\trole\tstate\tattempt\ttime\tnote\n")
	for _, c := range j.Cards {
		idx := "-"
		if c.Index > 0 {
			idx = fmt.Sprint(c.Index)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.Serial, idx, c.Role, c.State, c.Attempt, ts(c.Time), c.Note)
	}
	tw.Flush()

	fmt.Fprintf(&b, "\nParticipants\n")
	for _, op := range p.Participants {
		fmt.Fprintf(&b, "  %s\n", op)
	}
	fmt.Fprintf(&b, "\nEvents (audit log)\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, e := range p.Audit {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", e.Seq, ts(e.Time), e.Operator, e.Event, e.Message)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nAudit log at printing: %d entries, last hash %s\n", p.AuditEntries, p.AuditHead)
	fmt.Fprintf(&b, "Printed %s\n\n", ts(p.Printed))
	for _, op := range p.Participants {
		fmt.Fprintf(&b, "Signature (%s): ______________________________  Date: __________\n\n", op)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
