package journal

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/sharing"
)

// SetStatus is where a card set stands. Exactly one set is current once a key was generated or
// loaded; the others are history.
type SetStatus string

const (
	// SetIssuing: a Generate or Re-issue is writing the set's cards (or, for a Generate whose
	// cards were all written before an interruption, waits for Resume to read them back).
	SetIssuing SetStatus = "issuing"
	// SetCurrent: the set of the key the HSM holds; its cards load, copy and check.
	SetCurrent SetStatus = "current"
	// SetRetired: a re-issue replaced the set; its cards are refused.
	SetRetired SetStatus = "retired"
	// SetAbandoned: the ceremony writing the set ended before it was complete; its cards are
	// refused.
	SetAbandoned SetStatus = "abandoned"
	// SetFormer: the set was current, then a key generation or load made another set current
	// (after a factory reset). Its cards are of another key than the HSM's, or of a set this
	// appliance moved away from without retiring it; a load of them makes it current again.
	SetFormer SetStatus = "former"
)

// Refused reports whether cards of a set with this status are refused by Load, Copy and Card
// check.
func (s SetStatus) Refused() bool { return s == SetRetired || s == SetAbandoned }

// Set origins: how the appliance came to know a set.
const (
	OriginGenerate  = "generate"  // written by a key generation
	OriginReissue   = "reissue"   // written by a re-issue
	OriginLoad      = "load"      // first seen in cards read (made elsewhere: another node, a lost journal)
	OriginMigration = "migration" // the key set of a journal written before sets were kept
)

// CardSet is what the appliance knows of one card set: its quorum, its status, and for each
// share the card it was written to and the share's authenticator. It holds no share and no key:
// an authenticator is an HMAC under a key only the HSM can use (see hsm.Authenticator).
type CardSet struct {
	SetID   string    `json:"set_id"` // hex
	KeyID   string    `json:"key_id"` // hex
	K       int       `json:"k"`
	N       int       `json:"n"`
	Label   string    `json:"label,omitempty"`
	Status  SetStatus `json:"status"`
	Origin  string    `json:"origin"`
	Created time.Time `json:"created"`
	// Ceremony made or registered the set; Changed and ChangedBy say when and by which
	// ceremony its status last changed (retired, abandoned, former, current again).
	Ceremony  uint64      `json:"ceremony,omitempty"`
	Changed   time.Time   `json:"changed,omitzero"`
	ChangedBy uint64      `json:"changed_by,omitempty"`
	Shares    []ShareInfo `json:"shares,omitempty"` // by index; only the shares known
}

// ShareInfo is one share of a set: which card it went to and its authenticator.
type ShareInfo struct {
	Index int `json:"index"`
	// Serial is the card the share was written to (or read from, for a set learnt in a load);
	// empty until known. A copy on another card carries the same share.
	Serial string `json:"serial,omitempty"`
	// Written is when the card was written and verified (or read, for a set learnt in a load).
	Written time.Time `json:"written,omitzero"`
	// Authenticator is the hex HMAC of the share record under the HSM's authenticator key;
	// empty when it was never computed (a set registered by the migration).
	Authenticator string `json:"authenticator,omitempty"`
	// Profile is the card profile (pinpad/tcos) the share was written or read in: where on
	// the card it lives. A load with another profile does not find it.
	Profile string `json:"profile,omitempty"`
	// Copies are further cards a Copy card wrote this share to.
	Copies []string `json:"copies,omitempty"`
}

// Share returns the share of index i, if known.
func (s *CardSet) Share(i int) (ShareInfo, bool) {
	for _, sh := range s.Shares {
		if sh.Index == i {
			return sh, true
		}
	}
	return ShareInfo{}, false
}

// setShare adds or updates the share of info.Index, keeping what info leaves empty.
func (s *CardSet) SetShare(info ShareInfo) {
	for i, sh := range s.Shares {
		if sh.Index != info.Index {
			continue
		}
		if info.Serial != "" {
			sh.Serial = info.Serial
		}
		if !info.Written.IsZero() {
			sh.Written = info.Written
		}
		if info.Authenticator != "" {
			sh.Authenticator = info.Authenticator
		}
		if info.Profile != "" {
			sh.Profile = info.Profile
		}
		for _, c := range info.Copies {
			if !slices.Contains(sh.Copies, c) {
				sh.Copies = append(sh.Copies, c)
			}
		}
		s.Shares[i] = sh
		return
	}
	s.Shares = append(s.Shares, info)
	slices.SortFunc(s.Shares, func(a, b ShareInfo) int { return a.Index - b.Index })
}

// Holders are the cards known to hold the share: the one it was written to and its copies.
func (sh ShareInfo) Holders() []string {
	var out []string
	if sh.Serial != "" {
		out = append(out, sh.Serial)
	}
	for _, c := range sh.Copies {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func SetKey(setID string) ([]byte, error) {
	b, err := hex.DecodeString(setID)
	if err != nil || len(b) != len(sharing.SetID{}) {
		return nil, fmt.Errorf("%w: set id %q", ErrCorrupt, setID)
	}
	return b, nil
}

// DecodeCardSet decodes a set entry strictly (a damaged database is outside data too).
func DecodeCardSet(b []byte) (*CardSet, error) {
	var s CardSet
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: card set: %v", ErrCorrupt, err)
	}
	if _, err := SetKey(s.SetID); err != nil {
		return nil, err
	}
	if kb, err := hex.DecodeString(s.KeyID); err != nil || len(kb) != len(sharing.KeyID{}) {
		return nil, fmt.Errorf("%w: card set %s has a bad key id", ErrCorrupt, s.SetID)
	}
	if sharing.ValidateQuorum(s.K, s.N) != nil {
		return nil, fmt.Errorf("%w: card set %s has a bad quorum", ErrCorrupt, s.SetID)
	}
	switch s.Status {
	case SetIssuing, SetCurrent, SetRetired, SetAbandoned, SetFormer:
	default:
		return nil, fmt.Errorf("%w: card set %s has an unknown status", ErrCorrupt, s.SetID)
	}
	for _, sh := range s.Shares {
		if sh.Index < 1 || sh.Index > s.N {
			return nil, fmt.Errorf("%w: card set %s has a share index out of range", ErrCorrupt, s.SetID)
		}
		if sh.Authenticator != "" {
			if tb, err := hex.DecodeString(sh.Authenticator); err != nil || len(tb) == 0 {
				return nil, fmt.Errorf("%w: card set %s has a bad authenticator", ErrCorrupt, s.SetID)
			}
		}
	}
	return &s, nil
}

// GetSet returns the set with the hex ID, or nil when the appliance does not know it.
func GetSet(tx *bolt.Tx, setID string) (*CardSet, error) {
	k, err := SetKey(setID)
	if err != nil {
		return nil, err
	}
	raw := tx.Bucket(BucketSets).Get(k)
	if raw == nil {
		return nil, nil
	}
	return DecodeCardSet(raw)
}

func PutSet(tx *bolt.Tx, s *CardSet) error {
	k, err := SetKey(s.SetID)
	if err != nil {
		return err
	}
	return PutJSON(tx.Bucket(BucketSets), k, s)
}

// AllSets returns every set, in the order of their creation.
func AllSets(tx *bolt.Tx) ([]CardSet, error) {
	var out []CardSet
	err := tx.Bucket(BucketSets).ForEach(func(_, v []byte) error {
		s, err := DecodeCardSet(v)
		if err != nil {
			return err
		}
		out = append(out, *s)
		return nil
	})
	slices.SortStableFunc(out, func(a, b CardSet) int { return a.Created.Compare(b.Created) })
	return out, err
}

// CurrentSet returns the current set, or nil.
func CurrentSet(tx *bolt.Tx) (*CardSet, error) {
	sets, err := AllSets(tx)
	if err != nil {
		return nil, err
	}
	for i := range sets {
		if sets[i].Status == SetCurrent {
			return &sets[i], nil
		}
	}
	return nil, nil
}

// retire records the set a re-issue replaced as retired, registering it first when the appliance
// had no record of it (its cards were read, so it is known well enough to refuse them).
func retire(tx *bolt.Tx, j *Journal, now time.Time) error {
	if j.FromSetID == "" {
		return nil
	}
	from, err := GetSet(tx, j.FromSetID)
	if err != nil {
		return err
	}
	if from == nil {
		from = &CardSet{SetID: j.FromSetID, KeyID: j.KeyID, K: j.FromK, N: j.FromN, Origin: OriginLoad, Created: now, Ceremony: j.ID}
	}
	from.Status, from.Changed, from.ChangedBy = SetRetired, now, j.ID
	return PutSet(tx, from)
}

// makeCurrent makes s the current set; the set current before becomes prev (retired by a
// re-issue, former otherwise). Both are written.
func makeCurrent(tx *bolt.Tx, s *CardSet, prev SetStatus, ceremony uint64, now time.Time) error {
	old, err := CurrentSet(tx)
	if err != nil {
		return err
	}
	if old != nil && old.SetID != s.SetID {
		old.Status, old.Changed, old.ChangedBy = prev, now, ceremony
		if err := PutSet(tx, old); err != nil {
			return err
		}
	}
	if s.Status != SetCurrent {
		s.Status, s.Changed, s.ChangedBy = SetCurrent, now, ceremony
	}
	return PutSet(tx, s)
}

// ErrRetiredSet is the condition of a card of a retired or abandoned set; [*RetiredSetError]
// says which set and what became of it.
var ErrRetiredSet = errors.New("this card belongs to a retired set")

// RetiredSetError refuses a card of a set that a re-issue retired (Status SetRetired) or whose
// ceremony ended before it was complete (SetAbandoned).
type RetiredSetError struct {
	SetID    string // hex
	Index    int
	Status   SetStatus
	Ceremony uint64 // the ceremony that made the set
	Origin   string
	By       uint64 // the ceremony that retired or abandoned it
	When     time.Time
}

func (e *RetiredSetError) Error() string {
	when := e.When.UTC().Format("2006-01-02 15:04 UTC")
	if e.Status == SetAbandoned {
		return fmt.Sprintf("%v: share %d of set %s, whose %s #%d ended on %s before the set was complete, so it never became current",
			ErrRetiredSet, e.Index, Short(e.SetID), OriginTitle(e.Origin), e.Ceremony, when)
	}
	return fmt.Sprintf("%v: share %d of set %s, retired by re-issue #%d on %s", ErrRetiredSet, e.Index, Short(e.SetID), e.By, when)
}

func (e *RetiredSetError) Is(target error) bool { return target == ErrRetiredSet }

func NewRetiredSetError(s *CardSet, index int) *RetiredSetError {
	return &RetiredSetError{SetID: s.SetID, Index: index, Status: s.Status, Ceremony: s.Ceremony, Origin: s.Origin, By: s.ChangedBy, When: s.Changed}
}

func OriginTitle(origin string) string {
	switch origin {
	case OriginGenerate:
		return "key generation"
	case OriginReissue:
		return "re-issue"
	}
	return "ceremony"
}

// Short is a set ID as sharing.SetID.Short shows it: the first 8 hex digits and an ellipsis.
func Short(hexID string) string {
	if len(hexID) > 8 {
		return hexID[:8] + "…"
	}
	return hexID
}

// SetsEnding is what UpdateSets needs to know of how a ceremony attempt ended.
type SetsEnding struct {
	Status   Status
	Next     NextAction
	SetLabel string         // a Load's label for a set it registers
	SetTags  map[int]string // a Load's authenticators of the cards it read, by share index
}

// UpdateSets records in the card set registry what the end of ceremony j (SetsEnding e) means for
// the sets: a generation or re-issue that finished makes its set current (a re-issue retires the
// set it replaced), one that ended before its set was complete abandons it, a load makes the set
// it read current (registering it, with the authenticators of the cards read, when it is new).
// It runs inside commitEnd's transaction.
func UpdateSets(tx *bolt.Tx, j *Journal, e SetsEnding, now time.Time) error {
	switch j.Kind {
	case KindGenerate, KindReissue:
		if j.SetID == "" {
			return nil // ended before its set was split
		}
		cs, err := GetSet(tx, j.SetID)
		if err != nil || cs == nil {
			return err
		}
		for _, c := range j.Cards {
			if c.Role == RoleShare && c.State == CardWritten {
				cs.SetShare(ShareInfo{Index: c.Index, Serial: c.Serial, Written: c.Time, Profile: c.Profile})
			}
		}
		switch {
		case e.Status == StatusDone && j.Kind == KindReissue:
			if err := retire(tx, j, now); err != nil {
				return err
			}
			return makeCurrent(tx, cs, SetFormer, j.ID, now)
		case e.Status == StatusDone:
			return makeCurrent(tx, cs, SetFormer, j.ID, now)
		case e.Next == NextResume:
			return PutSet(tx, cs) // all cards written: the set waits for Resume to read them back
		case cs.Status == SetIssuing:
			cs.Status, cs.Changed, cs.ChangedBy = SetAbandoned, now, j.ID
			return PutSet(tx, cs)
		}
		return nil
	case KindLoad:
		if e.Status != StatusDone || j.SetID == "" {
			return nil
		}
		cs, err := GetSet(tx, j.SetID)
		if err != nil {
			return err
		}
		if cs == nil {
			cs = &CardSet{SetID: j.SetID, KeyID: j.KeyID, K: j.K, N: j.N, Label: e.SetLabel, Origin: OriginLoad,
				Created: now, Ceremony: j.ID}
		}
		for _, c := range j.Cards {
			if c.Role != RoleRead || c.State != CardRead || c.Attempt != j.Attempt || (c.SetID != "" && c.SetID != j.SetID) {
				continue
			}
			have, known := cs.Share(c.Index)
			info := ShareInfo{Index: c.Index, Profile: c.Profile}
			if !known || have.Serial == "" {
				info.Serial, info.Written = c.Serial, c.Time
			}
			if !known || have.Authenticator == "" {
				info.Authenticator = e.SetTags[c.Index]
			}
			cs.SetShare(info)
		}
		return makeCurrent(tx, cs, SetFormer, j.ID, now)
	}
	return nil
}

// ForgetCard removes serial from every share of every set: the card is about to be
// overwritten, so it no longer holds what the registry says. It runs in the transaction that
// journals the write.
func ForgetCard(tx *bolt.Tx, serial string) error {
	sets, err := AllSets(tx)
	if err != nil {
		return err
	}
	for i := range sets {
		s := &sets[i]
		changed := false
		for j, sh := range s.Shares {
			if sh.Serial == serial {
				s.Shares[j].Serial, changed = "", true
			}
			if slices.Contains(sh.Copies, serial) {
				s.Shares[j].Copies, changed = slices.DeleteFunc(slices.Clone(sh.Copies), func(c string) bool { return c == serial }), true
			}
		}
		if changed {
			if err := PutSet(tx, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// AddCopy records that serial holds a copy of share index of set setID, when the appliance
// knows the set.
func AddCopy(tx *bolt.Tx, setID string, index int, serial string) error {
	cs, err := GetSet(tx, setID)
	if err != nil || cs == nil {
		return err
	}
	for i, sh := range cs.Shares {
		if sh.Index == index {
			if sh.Serial == serial || slices.Contains(sh.Copies, serial) {
				return nil
			}
			cs.Shares[i].Copies = append(slices.Clone(sh.Copies), serial)
			return PutSet(tx, cs)
		}
	}
	cs.SetShare(ShareInfo{Index: index, Copies: []string{serial}})
	return PutSet(tx, cs)
}
