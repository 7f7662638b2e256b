package main

import (
	"context"
	"log/slog"

	"github.com/keyquorum/keyquorum/hsm"
)

// warnPendingRestore names, at start, a restore that stopped before it finished (a crash, a
// kill, a power cut): which backup, how far, and what to do.
func warnPendingRestore(ctx context.Context, h hsm.HSM, log *slog.Logger) {
	os, ok := h.(hsm.ObjectStore)
	if !ok {
		return
	}
	p, err := os.PendingRestore(ctx)
	switch {
	case err != nil:
		log.Error("the hsm's restore journal cannot be read", "err", err)
	case p != nil:
		log.Warn(p.String(), "backup_id", p.Backup.ID, "source", p.Backup.Source,
			"done", p.Done, "total", p.Total, "make_equal", p.MakeEqual)
	}
}
