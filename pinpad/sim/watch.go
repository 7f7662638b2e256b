package sim

import (
	"context"
	"sync"
)

// watcher queues every state for one Watch caller, so a slow reader neither blocks the pad
// nor misses a change.
type watcher struct {
	mu    sync.Mutex
	queue []State
	wake  chan struct{} // one pending wake-up
}

func (w *watcher) push(s State) {
	w.mu.Lock()
	w.queue = append(w.queue, s)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) pop() (State, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return State{}, false
	}
	s := w.queue[0]
	w.queue = w.queue[1:]
	return s, true
}

// Watch returns a channel that receives the current state and then every change, in order,
// until ctx ends; then the channel is closed.
func (p *Pad) Watch(ctx context.Context) <-chan State {
	w := &watcher{wake: make(chan struct{}, 1)}
	out := make(chan State)
	p.mu.Lock()
	w.push(p.state)
	p.watchers[w] = struct{}{}
	p.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			p.mu.Lock()
			delete(p.watchers, w)
			p.mu.Unlock()
		}()
		for {
			s, ok := w.pop()
			if !ok {
				select {
				case <-w.wake:
					continue
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
