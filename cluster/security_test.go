package cluster

import (
	"bytes"
	"context"
	"io"
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
	go func() { sent <- n.SendState(ctx, w, "node-b", [8]byte{}) }()
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
