package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
)

// SpoolDir is where a backup waits between the HSM and a client ("" is os.TempDir()). What is
// spooled is a backup, encrypted and authenticated under the MBK, never plaintext key material;
// the file is unlinked as soon as it is made, so nothing stays behind, not even after a crash.
var SpoolDir = ""

// The HSM's lock is never held while waiting on a client: a backup is written into a spool file
// under the lock and streamed to the client without it; an upload is read whole into a spool file
// (bounded by the caller, e.g. an http.MaxBytesReader) before the HSM takes its lock to restore
// it. A client that pauses its upload or stops reading its download holds a connection, not the
// HSM: status, other backups and restores go on.

// spool copies r into a new unlinked file and returns it rewound; the caller closes it.
func spool(r io.Reader) (*os.File, error) {
	f, err := os.CreateTemp(SpoolDir, "keyquorum-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool backup: %w", err)
	}
	return f, nil
}

// SpoolBackup writes a backup of h to w: made under the HSM's lock into a spool file, then
// copied to w without it. An error after the first byte reached w can only cut the stream off.
func SpoolBackup(ctx context.Context, h HSM, w io.Writer) error {
	return SpoolTo(w, func(f io.Writer) error { return h.Backup(ctx, f) })
}

// SpoolTo runs write (a backup made under the HSM's lock) into a spool file, then copies the
// file to w without any lock. Nothing reaches w unless write succeeded: a backup refused
// half-way (an object that cannot leave) leaves w untouched.
func SpoolTo(w io.Writer, write func(io.Writer) error) error {
	f, err := os.CreateTemp(SpoolDir, "keyquorum-spool-*")
	if err != nil {
		return fmt.Errorf("spool backup: %w", err)
	}
	os.Remove(f.Name())
	defer f.Close()
	if err := write(f); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool backup: %w", err)
	}
	_, err = io.Copy(w, f)
	return err
}

// SpoolRestore reads the whole backup from r into a spool file, then restores it into h: the
// HSM's lock is taken only once the upload is complete. Errors reading r are returned as they
// are (an http.MaxBytesError included).
func SpoolRestore(ctx context.Context, h HSM, r io.Reader) error {
	f, err := spool(r)
	if err != nil {
		return err
	}
	defer f.Close()
	return h.Restore(ctx, f)
}
