package pages

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyquorum/keyquorum/webconf/simpanel"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// EventStream serve the live view's event stream.
type EventStream struct {
	runner   web.CeremonyRunner
	sim      simpanel.Simulator // nil without the simulator
	pad      *padFeed           // nil without the simulator
	stopping <-chan struct{}
	log      *slog.Logger
}

// NewEventStream builds the live view's stream; s is nil without the simulator, stopping is
// closed when the server shuts down.
func NewEventStream(runner web.CeremonyRunner, s simpanel.Simulator, stopping <-chan struct{}, log *slog.Logger) *EventStream {
	h := &EventStream{runner: runner, sim: s, stopping: stopping, log: log}
	if s != nil {
		h.pad = newPadFeed(s)
	}
	return h
}

// keepAlive is how often an idle stream sends a comment, so proxies and browsers keep it open.
const keepAlive = 15 * time.Second

// rackPoll is how often the pad feed looks for cards added to or removed from the simulator's
// rack behind the pad's back.
const rackPoll = time.Second

// rackKey is what the page compares to know the rack changed.
func rackKey(v simpanel.View) string {
	b, _ := json.Marshal(v.Cards)
	return string(b)
}

// Stream sends server-sent events until the request's context ends or the server stops:
// "ceremony" with a liveView for every ceremony event (the latest one first), and "pad" with
// a simpanel.View for every change of the simulator pad. Any number of browsers may watch; a slow
// one loses intermediate ceremony events, never the latest (each is a full snapshot).
func (h *EventStream) Stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	sub := h.runner.Subscribe()
	defer sub.Close()
	var pad <-chan struct{}
	var padQ *padSub
	if h.pad != nil {
		padQ = h.pad.subscribe()
		defer h.pad.unsubscribe(padQ)
		pad = padQ.wake
	}
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The first message tells the page the stream is up, even before any ceremony ran.
	if err := send("hello", map[string]string{"now": web.FormatRFC3339(time.Now())}); err != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-h.stopping:
			return
		case ev, ok := <-sub.C():
			if !ok {
				return // the manager closed
			}
			err = send("ceremony", liveFromEvent(ev, time.Now()))
		case <-pad:
			for _, msg := range padQ.take() {
				if _, err = w.Write(msg); err != nil {
					break
				}
			}
			if err == nil {
				err = rc.Flush()
			}
		case <-tick.C:
			_, err = fmt.Fprint(w, ": keep-alive\n\n")
			if err == nil {
				err = rc.Flush()
			}
		}
		if err != nil {
			h.log.Debug("event stream ended", "err", err)
			return
		}
	}
}
