package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DBFile is the name of the journal database inside the data directory.
const DBFile = "ceremony.db"

// Bucket and key names; the package documentation draws the tree.
var (
	BucketMeta       = []byte("meta")
	BucketState      = []byte("state")
	BucketCeremonies = []byte("ceremonies")
	BucketAudit      = []byte("audit")
	BucketSets       = []byte("sets")
	BucketAuditIndex = []byte("audit-index")

	KeySchema    = []byte("schema")
	KeyAuditHead = []byte("audit-head")
	// KeyAuditVerified is the checkpoint of the last successful verification (JSON AuditHead).
	KeyAuditVerified = []byte("audit-verified")
	KeyCurrent       = []byte("current")
	KeyPending       = []byte("pending")
	KeyKeySet        = []byte("keyset")
)

// Migration brings the schema from version i to i+1, where i is its position in Migrations.
// Migrations are never edited once released: a change of schema is a new one at the end.
type Migration struct {
	Name string
	Fn   func(tx *bolt.Tx) error
}

var Migrations = []Migration{
	{"create the meta, state, ceremonies and audit buckets", migrateCreateBuckets},
	{"create the sets bucket and register the card set of the loaded key as current", migrateCardSets},
	{"create the audit index and index the entries in the log", migrateAuditIndex},
	{"start the authentication of the audit log: its entries so far carry no MAC", migrateAuditEpoch},
}

// migrateAuditEpoch records that the entries so far were appended without a MAC (keyquorum
// before schema 4 made none). The first append while the HSM holds a key then records the start
// of authentication ([AuditKeyed]) and authenticates from there on; entries are not rewritten.
func migrateAuditEpoch(tx *bolt.Tx) error {
	return PutJSON(tx.Bucket(BucketMeta), KeyAuditEpoch, AuditEpoch{Since: 1})
}

// SchemaVersion is the schema this build writes: one version per Migration.
var SchemaVersion = uint32(len(Migrations))

func migrateCreateBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{BucketMeta, BucketState, BucketCeremonies, BucketAudit} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// migrateCardSets creates the card set registry. A journal that knows the card set of the loaded
// key (state/keyset) registers it as the current set, with the serials it knows and no
// authenticators: its cards load and copy as before; a card check says it cannot vouch for
// them until the set is re-issued.
func migrateCardSets(tx *bolt.Tx) error {
	sets, err := tx.CreateBucketIfNotExists(BucketSets)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", BucketSets, err)
	}
	ks, err := LoadKeySet(tx)
	if err != nil || ks == nil {
		return err
	}
	k, err := SetKey(ks.SetID)
	if err != nil {
		return err
	}
	if sets.Get(k) != nil {
		return nil // the migration ran before, up to here
	}
	cs := &CardSet{SetID: ks.SetID, KeyID: ks.KeyID, K: ks.K, N: ks.N, Label: ks.Label, Status: SetCurrent,
		Origin: OriginMigration, Created: ks.Loaded, Ceremony: ks.Ceremony}
	for _, c := range ks.Cards {
		if c.Index > 0 && c.Index <= ks.N {
			cs.SetShare(ShareInfo{Index: c.Index, Serial: c.Serial, Written: c.Time})
		}
	}
	return PutSet(tx, cs)
}

// Conditions of the journal database.
var (
	// ErrLocked means another process has the data directory open.
	ErrLocked = errors.New("the ceremony journal is in use by another keyquorum process")
	// ErrSchemaTooNew means the journal was written by a newer Keyquorum.
	ErrSchemaTooNew = errors.New("the ceremony journal was written by a newer version of keyquorum")
	// ErrCorrupt means a journal record could not be decoded.
	// ErrNoCeremony means no ceremony has the ID asked for.
	ErrNoCeremony = errors.New("no such ceremony")
	ErrCorrupt    = errors.New("the ceremony journal holds a record that cannot be read")
)

// Store is the bbolt file. It counts committed write transactions, which is what the
// benchmark reports and what the crash test kills on.
type Store struct {
	db      *bolt.DB
	Commits atomic.Uint64
	// onAudit, when set (before the Store is shared), sees every audit entry once the
	// transaction that appended it has committed: the manager logs each as a structured line.
	OnAudit func(AuditEntry)
	// Key, when set (before the Store is shared), authenticates every audit entry appended by
	// Update inside the transaction that appends it (auditauth.go); Warn hears of an HSM that
	// could not.
	Key  AuditKey
	Warn func(msg string, err error)
	// MigratedFrom is the schema the file had when Open found it older than this build's (0:
	// new or current).
	MigratedFrom uint32
}

func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open journal: %w", ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	s := &Store{db: db}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// migrate runs the migrations the file has not seen yet, each in its own transaction together
// with the new version number, so an interrupted upgrade resumes where it stopped.
func (s *Store) migrate() error {
	var have uint32
	err := s.db.View(func(tx *bolt.Tx) error {
		have = SchemaOf(tx)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read journal schema: %w", err)
	}
	if have > SchemaVersion {
		return fmt.Errorf("open journal: %w (schema %d, this build knows %d)", ErrSchemaTooNew, have, SchemaVersion)
	}
	if have > 0 && have < SchemaVersion {
		s.MigratedFrom = have
	}
	for v := have; v < SchemaVersion; v++ {
		m := Migrations[v]
		err := s.Update(func(tx *bolt.Tx) error {
			if err := m.Fn(tx); err != nil {
				return err
			}
			meta, err := tx.CreateBucketIfNotExists(BucketMeta)
			if err != nil {
				return err
			}
			return meta.Put(KeySchema, binary.BigEndian.AppendUint32(nil, v+1))
		})
		if err != nil {
			return fmt.Errorf("migrate journal to schema %d (%s): %w", v+1, m.Name, err)
		}
	}
	return nil
}

func SchemaOf(tx *bolt.Tx) uint32 {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return 0
	}
	v := meta.Get(KeySchema)
	if len(v) != 4 {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

// update runs one logical transition in one read-write transaction.
func (s *Store) Update(fn func(tx *bolt.Tx) error) error {
	var appended []AuditEntry
	err := s.db.Update(func(tx *bolt.Tx) error {
		if s.OnAudit == nil && s.Key == nil {
			return fn(tx)
		}
		before := auditHeadSeq(tx)
		if err := fn(tx); err != nil {
			return err
		}
		if s.Key != nil {
			warn := s.Warn
			if warn == nil {
				warn = func(string, error) {}
			}
			if err := sealAudit(tx, before, s.Key, time.Now().UTC(), warn); err != nil {
				return err
			}
		}
		if s.OnAudit == nil {
			return nil
		}
		var err error
		appended, err = auditEntriesAfter(tx, before)
		return err
	})
	if err != nil {
		return err
	}
	s.Commits.Add(1)
	for _, e := range appended {
		s.OnAudit(e)
	}
	return nil
}

func (s *Store) View(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

func (s *Store) Close() error { return s.db.Close() }

// DB is the bbolt file itself, bypassing the commit count and OnAudit: for tests that damage a
// journal the way a disk or an attacker would.
func (s *Store) DB() *bolt.DB { return s.db }

func U64Key(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func KeyU64(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}
