package api

import (
	"sync"
	"sync/atomic"
	"time"

	. "github.com/keyquorum/keyquorum/ceremony/internal/journal"
)

// Wait is what the ceremony is waiting for.
type Wait string

const (
	WaitNone    Wait = ""
	WaitOK      Wait = "ok"      // OK or Cancel on the pad
	WaitCard    Wait = "card"    // a card and OK
	WaitPIN     Wait = "pin"     // a PIN typed on the pad
	WaitRemoval Wait = "removal" // the card taken out
	WaitRetry   Wait = "retry"   // Retry or Cancel from the operator (WebConf, CLI)
	// WaitConfirm is a question the pad cannot ask (its keys do not reach the host): the
	// operator answers with Confirm on the WebConf screen or the CLI.
	WaitConfirm Wait = "confirm"
)

// EventType says why an event was sent; every event carries the whole picture anyway.
type EventType string

const (
	EventStarted   EventType = "started"
	EventPrompt    EventType = "prompt"    // a new display text and wait
	EventProgress  EventType = "progress"  // a card done, a phase finished
	EventPINTries  EventType = "pin-tries" // the PIN tries left are known
	EventProblem   EventType = "problem"   // something went wrong; Error and Hint say what and what to do
	EventStalled   EventType = "stalled"   // waiting for Retry or Cancel
	EventOutcome   EventType = "outcome"   // the ceremony ended; Status and Outcome say how
	EventRecovered EventType = "recovered" // Open found an interrupted ceremony
)

// Event is a snapshot of a ceremony for the people watching it. It never carries a secret.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     EventType `json:"type"`
	Ceremony uint64    `json:"ceremony"`
	Kind     Kind      `json:"kind"`
	Operator string    `json:"operator"`
	Status   Status    `json:"status"`
	Phase    Phase     `json:"phase"`
	Step     Step      `json:"step"`
	// Display is the text on the PIN pad.
	Display string `json:"display,omitempty"`
	// Waiting and Deadline describe the current wait; Deadline is zero when nothing waits on a
	// timer (a stalled ceremony waits for the operator without one).
	Waiting  Wait      `json:"waiting,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
	// CardsDone of CardsTotal: cards written (of n) while writing, cards read (of k) while
	// reading.
	CardsDone  int `json:"cards_done"`
	CardsTotal int `json:"cards_total"`
	// PINTries is the tries left on the card's PIN; -1 when unknown.
	PINTries int `json:"pin_tries"`
	// Serial is the card in the reader, when one is.
	Serial string `json:"serial,omitempty"`
	// Error is the last problem, Hint what the operator can do about it.
	Error string `json:"error,omitempty"`
	Hint  string `json:"hint,omitempty"`
	// Outcome is set when the ceremony ended: what happened and what comes next, in words.
	Outcome string     `json:"outcome,omitempty"`
	Next    NextAction `json:"next,omitempty"`
	// Question is the question open on the screen while Waiting is WaitConfirm: an answer
	// ([Manager.Answer]) must name its ID.
	Question *Question `json:"question,omitempty"`
	// Sets is how far each card set a read has seen got, when cards of more than one set were
	// read (a Load finishes with the first set that reaches its quorum).
	Sets []SetProgress `json:"sets,omitempty"`
}

// SetProgress is how many distinct shares of one card set a read holds, of the k it needs.
type SetProgress struct {
	SetID string `json:"set_id"` // hex
	Label string `json:"label,omitempty"`
	Read  int    `json:"read"`
	K     int    `json:"k"`
}

// SubscriptionBuffer is how many events a subscriber may lag behind before the oldest it has
// not received is dropped.
const SubscriptionBuffer = 64

// Subscription receives events until it is closed.
type Subscription struct {
	c       chan Event
	b       *Broker
	dropped atomic.Uint64
	once    sync.Once
}

// C delivers the events. It is closed by [Subscription.Close] and when the Manager closes.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped is how many events were dropped because the subscriber lagged. Each event is a full
// snapshot, so the latest received still tells the whole picture.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unsubscribes and closes C. It is safe to call more than once.
func (s *Subscription) Close() { s.b.remove(s) }

// broker fans events out to subscribers without ever blocking the sender.
type Broker struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	seq    uint64
	last   Event
	closed bool
}

func NewBroker() *Broker { return &Broker{subs: make(map[*Subscription]struct{})} }

func (b *Broker) Subscribe() *Subscription {
	s := &Subscription{c: make(chan Event, SubscriptionBuffer), b: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.c)
		return s
	}
	b.subs[s] = struct{}{}
	if b.seq > 0 {
		s.c <- b.last // the picture as it is now
	}
	return s
}

func (b *Broker) remove(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		s.once.Do(func() { close(s.c) })
	}
}

// publish stamps ev and delivers it. A full subscriber loses its oldest pending event; only
// publish sends on the channels and it holds the lock, so after one receive there is room.
func (b *Broker) Publish(ev Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	ev.Seq = b.seq
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b.last = ev
	if b.closed {
		return ev
	}
	for s := range b.subs {
		select {
		case s.c <- ev:
			continue
		default:
		}
		select {
		case <-s.c:
			s.dropped.Add(1)
		default:
		}
		select {
		case s.c <- ev:
		default:
			s.dropped.Add(1)
		}
	}
	return ev
}

func (b *Broker) Latest() (Event, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last, b.seq > 0
}

func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		s.once.Do(func() { close(s.c) })
	}
}
