package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// stalledWriter takes the first write, then blocks every further one until released: a client
// that asked for the state (or a backup) and stopped reading.
type stalledWriter struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.started) })
	<-w.release
	return len(p), nil
}

// stalledReader gives the first part of a backup, then blocks until released: a paused upload.
type stalledReader struct {
	r       io.Reader
	n       int
	started chan struct{}
	release chan struct{}
}

func (s *stalledReader) Read(p []byte) (int, error) {
	if s.n <= 0 {
		select {
		case <-s.started:
		default:
			close(s.started)
		}
		<-s.release
		return s.r.Read(p)
	}
	if len(p) > s.n {
		p = p[:s.n]
	}
	n, err := s.r.Read(p)
	s.n -= n
	return n, err
}

// within fails unless f returns within d.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Errorf("%s blocked for %s", what, d)
	}
}

// TestSecurityStalledClientHoldsNoHSMLock: a joining node that requested the state and stopped
// reading, and an upload that pauses, hold no lock of the HSM: its key ID, another backup and a
// restore go on meanwhile.
func TestSecurityStalledClientHoldsNoHSMLock(t *testing.T) {
	ctx := context.Background()
	mbk := newMBK()
	h := newHSM(t, mbk, 20)
	n := &Node{HSM: h, Audit: &auditLog{}}
	var good bytes.Buffer
	if err := h.Backup(ctx, &good); err != nil {
		t.Fatal(err)
	}

	w := &stalledWriter{started: make(chan struct{}), release: make(chan struct{})}
	sent := make(chan error, 1)
	go func() { sent <- n.SendState(ctx, w, "node-b", [8]byte{}, Registration{}) }()
	<-w.started
	within(t, 3*time.Second, "key ID while a state reader stalls", func() error { _, err := h.BackupKeyID(ctx); return err })
	within(t, 3*time.Second, "restore while a state reader stalls", func() error {
		_, err := Restore(ctx, h, bytes.NewReader(good.Bytes()))
		return err
	})
	close(w.release)
	if err := <-sent; err != nil {
		t.Fatalf("the stalled state transfer, once read again: %v", err)
	}

	up := &stalledReader{r: bytes.NewReader(good.Bytes()), n: good.Len() / 2, started: make(chan struct{}), release: make(chan struct{})}
	restored := make(chan error, 1)
	go func() { _, err := Restore(ctx, h, up); restored <- err }()
	<-up.started
	within(t, 3*time.Second, "key ID while an upload pauses", func() error { _, err := h.BackupKeyID(ctx); return err })
	within(t, 3*time.Second, "backup while an upload pauses", func() error { return SpoolBackup(ctx, h, io.Discard) })
	close(up.release)
	if err := <-restored; err != nil {
		t.Fatalf("the paused restore, once resumed: %v", err)
	}
}

// TestSecurityNodeWithoutKeyGetsNoState: a node certificate of this CA whose node does not hold
// the MBK gets no state — not by naming this node's key ID (which it can learn from anywhere),
// not with a proof made under another key, not by replaying a proof — and no refusal tells it
// the key ID.
func TestSecurityNodeWithoutKeyGetsNoState(t *testing.T) {
	ctx := context.Background()
	ca := newTestCA(t, "A's management CA")
	mbk := newMBK()
	a := &Node{HSM: newHSM(t, mbk, 3), Issuer: ca, CA: ca.cert, Audit: &auditLog{}}
	mine, _ := a.HSM.BackupKeyID(ctx)
	nodeCert, _, _ := ca.issue(pkix.Name{CommonName: "node-b", Organization: []string{NodeOrganization}}, x509.ExtKeyUsageClientAuth, nil)
	other := newHSM(t, newMBK(), 0)

	check := func(what, challenge, proof string) {
		t.Helper()
		_, err := a.CheckJoiner(ctx, "node-b", nodeCert, challenge, proof)
		if err == nil {
			t.Fatalf("%s: the state would be sent", what)
		}
		if strings.Contains(strings.ToLower(err.Error()), mine.String()) {
			t.Errorf("%s: the refusal names the key ID: %v", what, err)
		}
	}
	ch, _ := a.Challenge(nodeCert, time.Now())
	check("the key ID as the proof", ch.Challenge, mine.String())
	ch, _ = a.Challenge(nodeCert, time.Now())
	proof, err := Prove(ctx, other, ch, nodeCert)
	if err != nil {
		t.Fatal(err)
	}
	check("a proof under another key", ch.Challenge, proof)
	if !a.Audit.(*auditLog).has(AuditClusterStateRefused) {
		t.Error("the refused proof was not audited")
	}
	// A good proof is good once, for its own challenge.
	same := newHSM(t, mbk, 0)
	ch, _ = a.Challenge(nodeCert, time.Now())
	good, _ := Prove(ctx, same, ch, nodeCert)
	if _, err := a.CheckJoiner(ctx, "node-b", nodeCert, ch.Challenge, good); err != nil {
		t.Fatalf("the right proof: %v", err)
	}
	check("a replayed proof", ch.Challenge, good)
	ch2, _ := a.Challenge(nodeCert, time.Now())
	check("a proof of another challenge", ch2.Challenge, good)

	// Over the wire: a node without the key gets a refusal that names no key ID, and nothing.
	u := peer(t, a, ca)
	b := &Node{HSM: other, Audit: &auditLog{}, MaxUpload: 1 << 20}
	_, err = b.TakeOver(ctx, u, nodeFile(t, a))
	var pe *PeerError
	if !errors.As(err, &pe) || !pe.ForeignKey {
		t.Fatalf("a node of another key: %v", err)
	}
	if strings.Contains(strings.ToLower(err.Error()), mine.String()) {
		t.Errorf("the refusal names the key ID: %v", err)
	}
	if keys, _ := other.Keys(ctx); len(keys) != 0 {
		t.Errorf("the node without the key took over %d keys", len(keys))
	}
}
