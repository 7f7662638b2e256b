package pages

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/webconf/simpanel"
)

// padFeed watches the simulator pad once for every event stream: each pad change, and each
// look at the rack (rackPoll), reads the card list once and encodes the "pad" message once,
// however many browsers watch; each stream only writes the encoded messages out. (With a
// Watch, a card list and an encoding per stream, 500 live views read the card list 500 times
// per pad event and 500 times a second for the rack.) It runs while at least one stream
// watches.
type padFeed struct {
	sim simpanel.Simulator

	mu     sync.Mutex
	subs   map[*padSub]struct{}
	cancel context.CancelFunc // of the running feed; nil while no stream watches
	run    int                // the running feed's number, so a stopped one publishes nothing
	last   []byte             // the newest message of the running feed, nil before its first
}

// padSub is one stream's queue of encoded "pad" messages: every one, in order, as
// sim.Pad.Watch gives every state (each is a full picture, so a slow browser is only late).
type padSub struct {
	mu    sync.Mutex
	queue [][]byte
	wake  chan struct{} // one pending wake-up
}

func (s *padSub) push(msg []byte) {
	s.mu.Lock()
	s.queue = append(s.queue, msg)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns the queued messages and empties the queue.
func (s *padSub) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

func newPadFeed(s simpanel.Simulator) *padFeed {
	return &padFeed{sim: s, subs: map[*padSub]struct{}{}}
}

// subscribe adds a stream: its queue holds the pad as it is now (once known) and then every
// change. The stream calls unsubscribe when it ends.
func (f *padFeed) subscribe() *padSub {
	s := &padSub{wake: make(chan struct{}, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[s] = struct{}{}
	if f.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f.cancel, f.last = cancel, nil
		f.run++
		go f.watch(ctx, f.run)
	} else if f.last != nil {
		s.push(f.last)
	}
	return s
}

func (f *padFeed) unsubscribe(s *padSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
	if len(f.subs) == 0 && f.cancel != nil {
		f.cancel()
		f.cancel, f.last = nil, nil
	}
}

// watch is the feed number run: it reads the pad's states and, every rackPoll, the rack, and
// publishes a message for every state and every change of the rack.
func (f *padFeed) watch(ctx context.Context, run int) {
	pad := f.sim.Watch(ctx)
	t := time.NewTicker(rackPoll)
	defer t.Stop()
	var lastPad sim.State
	var lastRack string
	for {
		select {
		case <-ctx.Done():
			return
		case st, ok := <-pad:
			if !ok {
				return
			}
			v := simpanel.ViewFrom(st, f.sim.Cards())
			lastPad, lastRack = st, rackKey(v)
			f.publish(run, v)
		case <-t.C:
			// A pad whose state lives elsewhere (the virtual cyberJack's rack of card files)
			// does not report a new card through Watch: a change of the rack is sent as a pad
			// message, so the page shows the card without a reload.
			v := simpanel.ViewFrom(lastPad, f.sim.Cards())
			if k := rackKey(v); k != lastRack {
				lastRack = k
				f.publish(run, v)
			}
		}
	}
}

func (f *padFeed) publish(run int, v simpanel.View) {
	b, err := json.Marshal(v)
	if err != nil {
		return // a View always encodes
	}
	msg := fmt.Appendf(nil, "event: pad\ndata: %s\n\n", b)
	f.mu.Lock()
	defer f.mu.Unlock()
	if run != f.run || f.cancel == nil {
		return
	}
	f.last = msg
	for s := range f.subs {
		s.push(msg)
	}
}
