package journal

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keyquorum/keyquorum/pinpad"
)

// Kind is a kind of ceremony.
type Kind string

// The ceremony kinds; the package documentation describes each.
const (
	KindGenerate     Kind = "generate"
	KindLoad         Kind = "load"
	KindCopyCard     Kind = "copy-card"
	KindChangePIN    Kind = "change-pin"
	KindSlotUserCard Kind = "slot-user-card"
	KindActivateSlot Kind = "activate-slot"
	KindFactoryReset Kind = "factory-reset"
	KindReissue      Kind = "reissue"
	KindCardCheck    Kind = "card-check"
)

// Kinds lists every kind, in the order a menu shows them.
var Kinds = []Kind{KindGenerate, KindLoad, KindCopyCard, KindChangePIN, KindSlotUserCard, KindActivateSlot, KindFactoryReset, KindReissue, KindCardCheck, KindPrepareCards}

// Title is the kind's name for people.
func (k Kind) Title() string {
	switch k {
	case KindGenerate:
		return "key generation"
	case KindLoad:
		return "key load"
	case KindCopyCard:
		return "card copy"
	case KindChangePIN:
		return "PIN change"
	case KindSlotUserCard:
		return "slot user card"
	case KindActivateSlot:
		return "slot activation"
	case KindFactoryReset:
		return "factory reset"
	case KindReissue:
		return "card set re-issue"
	case KindCardCheck:
		return "card check"
	case KindPrepareCards:
		return "Prepare cards"
	}
	return string(k)
}

// Status is where a ceremony stands as a whole.
type Status string

const (
	// StatusRunning: the ceremony is under way.
	StatusRunning Status = "running"
	// StatusStalled: a step failed in a way that can be retried (pad timeout, reader
	// disconnected); the ceremony waits for Retry or Cancel.
	StatusStalled Status = "stalled"
	// StatusDone: the ceremony finished successfully.
	StatusDone Status = "done"
	// StatusAborted: the ceremony ended without success (cancelled or failed).
	StatusAborted Status = "aborted"
	// StatusInterrupted: the process stopped while the ceremony ran; see Journal.Next.
	StatusInterrupted Status = "interrupted"
)

// Ended reports whether the status is final for this attempt.
func (s Status) Ended() bool {
	return s == StatusDone || s == StatusAborted || s == StatusInterrupted
}

// Phase is the part of a ceremony the journal last committed. The recovery classification is
// made from it.
type Phase string

const (
	PhaseStarted   Phase = "started"   // journal created, nothing touched yet
	PhaseWriting   Phase = "writing"   // Generate, Re-issue: writing the n cards
	PhaseReading   Phase = "reading"   // Generate (all n written), Load, Re-issue: reading k cards
	PhaseLoading   Phase = "loading"   // the key is about to be loaded into the HSM
	PhaseSource    Phase = "source"    // Copy: reading the source card
	PhaseTarget    Phase = "target"    // Copy: writing the target card
	PhaseCard      Phase = "card"      // Change PIN, slot user card, activation, card check: working on the card
	PhaseResetting Phase = "resetting" // Factory reset: zeroizing the HSM
	PhaseFinished  Phase = "finished"
)

// NextAction is what an ended ceremony leaves to do.
type NextAction string

const (
	// NextNone: nothing is required.
	NextNone NextAction = ""
	// NextResume: the key can still be loaded from the cards; Resume reads them.
	NextResume NextAction = "resume"
	// NextRestartRead: Resume starts reading the cards again.
	NextRestartRead NextAction = "restart-read"
	// NextReset: a factory reset is required before a new key generation or load.
	NextReset NextAction = "reset"
)

// Request is what a caller asks Start for. Only the fields of its Kind are used.
type Request struct {
	Kind Kind `json:"kind"`
	// K and N are the quorum of a Generate or of the new set of a Re-issue: any K of the N cards
	// reconstruct the key.
	K int `json:"k,omitempty"`
	N int `json:"n,omitempty"`
	// Label names the appliance or cluster on the cards of a Generate or Re-issue (printable,
	// ≤ 64 bytes). A Re-issue without one keeps the label of the set it replaces.
	Label string `json:"label,omitempty"`
	// Slot is the card slot of a ChangePIN (share or slot user).
	Slot pinpad.Slot `json:"slot,omitempty"`
	// PKCS11Slot is the PKCS#11 slot of a SlotUserCard or ActivateSlot.
	PKCS11Slot uint `json:"pkcs11_slot,omitempty"`
	// Overwrite allows a Copy to overwrite a target card that holds a share of another set
	// without asking on the pad again.
	Overwrite bool `json:"overwrite,omitempty"`
}

// CardRole says what a card was in a ceremony.
type CardRole string

const (
	RoleShare      CardRole = "share"       // Generate: received share Index
	RoleRead       CardRole = "read"        // Generate read-back, Load: share Index was read
	RoleCopySource CardRole = "copy-source" // Copy: the card copied from
	RoleCopyTarget CardRole = "copy-target" // Copy: the card copied to
	RolePIN        CardRole = "pin"         // Change PIN
	RoleSlotUser   CardRole = "slot-user"   // slot user card written or read
	RoleRefused    CardRole = "refused"     // inserted and refused; Note says why
	RoleChecked    CardRole = "checked"     // Card check: the card checked; Note says the verdict
)

// CardState is how far the work on one card got.
type CardState string

const (
	CardWriting  CardState = "writing"  // committed before the write: the card may hold the data
	CardWritten  CardState = "written"  // written, read back and compared
	CardRead     CardState = "read"     // read and accepted
	CardDone     CardState = "done"     // the ceremony's operation on this card succeeded
	CardUnusable CardState = "unusable" // its share belongs to a set that will never be complete
	CardRefused  CardState = "refused"
)

// CardEntry is one card in a ceremony: which card, which share index, what happened. It never
// holds a share or a PIN.
type CardEntry struct {
	Serial string `json:"serial"`
	Index  int    `json:"index,omitempty"` // share index, 1..n; 0 when not a share
	// SetID is the set of the share read (role read), when a read saw several sets.
	SetID   string    `json:"set_id,omitempty"`
	Role    CardRole  `json:"role"`
	State   CardState `json:"state"`
	Attempt int       `json:"attempt,omitempty"`
	Time    time.Time `json:"time"`
	Note    string    `json:"note,omitempty"`
	// Profile names the card profile (pinpad/tcos) the data was written in: a card's layout
	// says where its slots are, so a card written in one profile is read back in the same.
	Profile string `json:"profile,omitempty"`
}

// Participant is an operator who acted on a ceremony.
type Participant struct {
	Operator string    `json:"operator"`
	Action   string    `json:"action"` // start, retry, cancel, resume
	Time     time.Time `json:"time"`
}

// Journal is the committed state of one ceremony. It holds no key material, no share and no PIN:
// the set ID and key ID name a key without revealing it.
type Journal struct {
	ID           uint64        `json:"id"`
	Kind         Kind          `json:"kind"`
	Status       Status        `json:"status"`
	Phase        Phase         `json:"phase"`
	Step         Step          `json:"step"`
	Operator     string        `json:"operator"` // who started it
	Participants []Participant `json:"participants"`
	Request      Request       `json:"request"`
	K            int           `json:"k,omitempty"`
	N            int           `json:"n,omitempty"`
	SetID        string        `json:"set_id,omitempty"` // hex
	KeyID        string        `json:"key_id,omitempty"` // hex
	Cards        []CardEntry   `json:"cards,omitempty"`
	Attempt      int           `json:"attempt"`
	Started      time.Time     `json:"started"`
	Updated      time.Time     `json:"updated"`
	Ended        time.Time     `json:"ended,omitzero"`
	LastError    string        `json:"last_error,omitempty"`
	Outcome      string        `json:"outcome,omitempty"` // in words, for the operator
	Next         NextAction    `json:"next,omitempty"`
	Unusable     []string      `json:"unusable,omitempty"` // serials of cards that hold a useless share
	AuditHead    string        `json:"audit_head,omitempty"`
	// FromSetID, FromK and FromN are the set a Re-issue replaces (SetID, K and N are the new
	// one's once it was split).
	FromSetID string `json:"from_set_id,omitempty"`
	FromK     int    `json:"from_k,omitempty"`
	FromN     int    `json:"from_n,omitempty"`
	// Check is what a Card check found.
	Check *CardCheck `json:"check,omitempty"`
	// Questions counts the questions asked on the screen (their IDs are numbered from it);
	// Question is the one open now, nil when none is.
	Questions int       `json:"questions,omitempty"`
	Question  *Question `json:"question,omitempty"`
}

// clone returns a deep copy, so a run can prepare a transition without touching the committed
// state until the commit succeeded.
func (j *Journal) Clone() *Journal {
	c := *j
	c.Participants = slices.Clone(j.Participants)
	c.Cards = slices.Clone(j.Cards)
	c.Unusable = slices.Clone(j.Unusable)
	if j.Check != nil {
		ch := *j.Check
		c.Check = &ch
	}
	if j.Question != nil {
		q := *j.Question
		c.Question = &q
	}
	return &c
}

// cards returns the entries of the current attempt with the given role and state.
func (j *Journal) CardsWith(role CardRole, state CardState) []CardEntry {
	var out []CardEntry
	for _, c := range j.Cards {
		if c.Role == role && c.State == state && c.Attempt == j.Attempt {
			out = append(out, c)
		}
	}
	return out
}

// setCard updates the entry of the current attempt for serial and role, or adds one.
func (j *Journal) SetCard(e CardEntry) {
	e.Attempt = j.Attempt
	for i, c := range j.Cards {
		if c.Serial == e.Serial && c.Role == e.Role && c.Attempt == e.Attempt && c.Index == e.Index {
			j.Cards[i] = e
			return
		}
	}
	j.Cards = append(j.Cards, e)
}

func DecodeJournal(b []byte) (*Journal, error) {
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if j.ID == 0 || j.Kind == "" || j.Status == "" {
		return nil, fmt.Errorf("%w: journal entry without id, kind or status", ErrCorrupt)
	}
	return &j, nil
}

// Pending is what an interrupted or aborted ceremony requires before the next key ceremony.
type Pending struct {
	Ceremony uint64     `json:"ceremony"`
	Kind     Kind       `json:"kind"`
	Next     NextAction `json:"next"`
	Message  string     `json:"message"`
	Unusable []string   `json:"unusable,omitempty"`
}

// KeySet describes the card set of the MBK loaded by the last successful Generate or Load.
type KeySet struct {
	SetID    string      `json:"set_id"`
	KeyID    string      `json:"key_id"`
	K        int         `json:"k"`
	N        int         `json:"n"`
	Label    string      `json:"label,omitempty"`
	Cards    []CardEntry `json:"cards,omitempty"` // the serials known to hold a share
	Ceremony uint64      `json:"ceremony"`
	Loaded   time.Time   `json:"loaded"`
}

func GetJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("%w: %s: %v", ErrCorrupt, key, err)
	}
	return true, nil
}

func PutJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

func LoadJournal(tx *bolt.Tx, id uint64) (*Journal, error) {
	raw := tx.Bucket(BucketCeremonies).Get(U64Key(id))
	if raw == nil {
		return nil, fmt.Errorf("read ceremony %d: %w", id, ErrNoCeremony)
	}
	return DecodeJournal(raw) // decodes into new memory: nothing points into the page
}

func CurrentID(tx *bolt.Tx) uint64 {
	v, _ := KeyU64(tx.Bucket(BucketState).Get(KeyCurrent))
	return v
}

func LoadPending(tx *bolt.Tx) (*Pending, error) {
	var p Pending
	ok, err := GetJSON(tx.Bucket(BucketState), KeyPending, &p)
	if err != nil || !ok {
		return nil, err
	}
	return &p, nil
}

func LoadKeySet(tx *bolt.Tx) (*KeySet, error) {
	var k KeySet
	ok, err := GetJSON(tx.Bucket(BucketState), KeyKeySet, &k)
	if err != nil || !ok {
		return nil, err
	}
	// A key set recorded before the read-back was told apart lists a generation's cards twice
	// (written, then read back): each card counts once.
	var cards []CardEntry
	for _, c := range k.Cards {
		if !slices.ContainsFunc(cards, func(o CardEntry) bool { return o.Serial == c.Serial && o.Index == c.Index }) {
			cards = append(cards, c)
		}
	}
	k.Cards = cards
	return &k, nil
}
