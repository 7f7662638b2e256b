package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
	"github.com/keyquorum/keyquorum/hsm/backup"
)

// Restored answers a restore or a cluster join: what the HSM now holds.
type Restored struct {
	BackupKeyID string    `json:"backup_key_id"`
	Source      string    `json:"source"`
	Created     time.Time `json:"created"`
	Keys        int       `json:"keys"` // -1 when the HSM cannot list its keys
	Peer        string    `json:"peer,omitempty"`
}

// ErrTooLarge is a backup larger than the bound of the reader it came from.
var ErrTooLarge = errors.New("the backup is larger than the upload limit")

// checkedBackup reads a backup's header from r and checks it was made under the master backup
// key this HSM holds, before anything is restored. It returns the header and a reader of the
// whole backup (the header included) for the HSM.
func checkedBackup(ctx context.Context, h HSM, r io.Reader) (*backup.Header, io.Reader, error) {
	want, err := h.BackupKeyID(ctx)
	if err != nil {
		return nil, nil, err
	}
	var head bytes.Buffer
	hdr, err := backup.ReadHeader(io.TeeReader(r, &head))
	if err != nil {
		return nil, nil, err
	}
	if hdr.KeyID != want {
		return nil, nil, &hsm.ForeignKeyError{Got: hdr.KeyID, Want: want}
	}
	return hdr, io.MultiReader(&head, r), nil
}

// Restore restores the backup read from r into h: a backup of another master backup key is
// refused from its header (an *hsm.ForeignKeyError) before the HSM is asked, and the HSM
// changes nothing unless the whole backup authenticated. When r is bounded by an
// http.MaxBytesReader and the backup hits the bound, the error is ErrTooLarge, whatever the
// HSM wraps the read error in.
func Restore(ctx context.Context, h HSM, r io.Reader) (*backup.Header, error) {
	body := &limitFlag{r: r}
	hdr, err := restore(ctx, h, body)
	if body.hit {
		return nil, ErrTooLarge
	}
	return hdr, err
}

func restore(ctx context.Context, h HSM, r io.Reader) (*backup.Header, error) {
	hdr, _, err := restoreWith(ctx, h, r, hsm.RestoreOptions{})
	return hdr, err
}

// RestoreWith is Restore with options: make the HSM equal to the backup, or only preview what a
// restore would do (DryRun). It returns the plan, which says what was (or would be) added,
// replaced, kept and removed, and which objects the backup left out when it was made. An HSM
// without an object store restores plainly, and returns no plan.
func RestoreWith(ctx context.Context, h HSM, r io.Reader, opts hsm.RestoreOptions) (*backup.Header, *hsm.RestorePlan, error) {
	body := &limitFlag{r: r}
	hdr, plan, err := restoreWith(ctx, h, body, opts)
	if body.hit {
		return nil, nil, ErrTooLarge
	}
	return hdr, plan, err
}

func restoreWith(ctx context.Context, h HSM, r io.Reader, opts hsm.RestoreOptions) (*backup.Header, *hsm.RestorePlan, error) {
	hdr, all, err := checkedBackup(ctx, h, r)
	if err != nil {
		return nil, nil, err
	}
	store, ok := h.(hsm.ObjectStore)
	if !ok {
		if opts.DryRun || opts.MakeEqual {
			return nil, nil, errors.New("this hsm restores only plainly: no preview, no make-equal")
		}
		return hdr, nil, SpoolRestore(ctx, h, all)
	}
	// The upload is read whole before the HSM takes its lock (spool.go).
	f, err := spool(all)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	all = f
	plan, err := store.RestoreObjects(ctx, all, opts)
	if err != nil {
		return nil, nil, err
	}
	return hdr, plan, nil
}

// Result is what a restore of the backup with header hdr left in h (peer: the node it came
// from, "" for a file).
func Result(ctx context.Context, h HSM, hdr *backup.Header, peer string) Restored {
	out := Restored{BackupKeyID: hdr.KeyID.String(), Source: hdr.Source, Created: hdr.Created.UTC(), Keys: -1, Peer: peer}
	if ks, ok := h.(hsm.KeyStore); ok {
		if keys, err := ks.Keys(ctx); err == nil {
			out.Keys = len(keys)
		}
	}
	return out
}

// limitFlag remembers that a read hit its http.MaxBytesReader bound.
type limitFlag struct {
	r   io.Reader
	hit bool
}

func (l *limitFlag) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		l.hit = true
	}
	return n, err
}

// ByteSize says a size for an operator: 64 MiB, 12 KiB, 300 bytes.
func ByteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
