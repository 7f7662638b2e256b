package ceremony

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/keyquorum/keyquorum/hsm"

	"github.com/keyquorum/keyquorum/ceremony/internal/api"
)

// hsmAuditKey authenticates the audit log with the HSM's [hsm.Authenticator]: HMAC-SHA256 under
// the key the HSM derives from the master backup key, which never leaves the HSM (see
// docs/design.md, "The audit log"). The journal calls it inside the transaction that appends
// entries, so each HSM call is bounded.
type hsmAuditKey struct {
	h   api.HSM
	log *slog.Logger
}

// auditKeyTimeout bounds one HSM call made for the audit log: a MAC costs microseconds on the
// soft HSM and one C_Sign on PKCS#11, so an HSM that takes longer is failing, and the entries
// of that transaction are appended without a MAC (logged) rather than holding the journal.
const auditKeyTimeout = 5 * time.Second

// errNoAuthenticator: the HSM cannot make MACs at all.
var errNoAuthenticator = errors.New("this HSM cannot authenticate data (no authenticator)")

func (k hsmAuditKey) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), auditKeyTimeout)
}

func (k hsmAuditKey) KeyID() (string, error) {
	ctx, cancel := k.ctx()
	defer cancel()
	id, err := k.h.BackupKeyID(ctx)
	if errors.Is(err, hsm.ErrNoBackupKey) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	a, ok := k.h.(hsm.Authenticator)
	if !ok {
		return "", errNoAuthenticator
	}
	// An HSM can hold a key and still be unable to authenticate (a PKCS#11 token whose MBK an
	// older keyquorum loaded has no authenticator key): then the log is not authenticated, and
	// says so, rather than carrying a key it has no MACs for.
	if _, err := a.Authenticate(ctx, []byte(auditProbe)); err != nil {
		return "", err
	}
	return id.String(), nil
}

// auditProbe is what KeyID authenticates to learn whether the HSM can.
const auditProbe = "keyquorum audit probe v1"

func (k hsmAuditKey) MAC(msg []byte) ([]byte, error) {
	a, ok := k.h.(hsm.Authenticator)
	if !ok {
		return nil, errNoAuthenticator
	}
	ctx, cancel := k.ctx()
	defer cancel()
	return a.Authenticate(ctx, msg)
}

func (k hsmAuditKey) CheckMAC(msg, tag []byte) (bool, error) {
	a, ok := k.h.(hsm.Authenticator)
	if !ok {
		return false, errNoAuthenticator
	}
	ctx, cancel := k.ctx()
	defer cancel()
	err := a.CheckAuthenticator(ctx, msg, tag)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, hsm.ErrAuthenticatorMismatch):
		return false, nil
	default:
		return false, fmt.Errorf("the HSM could not check it: %w", err)
	}
}

func (k hsmAuditKey) warn(msg string, err error) { k.log.Warn(msg, "err", err) }
