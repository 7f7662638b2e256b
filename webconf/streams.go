package webconf

import (
	"net/http"
	"sync"

	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// maxStreamsPerOperator bounds the live streams (the live view's event stream, the command
// line's ceremony events) one operator holds open at once: a few browser tabs and a --watch or
// two, not thousands — each holds a connection, a subscription and buffers.
const maxStreamsPerOperator = 8

// streamRoutes are the route patterns of long-lived streams.
var streamRoutes = map[string]bool{
	"GET /events":                 true,
	"GET /api/v1/ceremony/events": true,
}

// streamLimit counts the open streams of each operator.
type streamLimit struct {
	mu   sync.Mutex
	open map[string]int
}

// limitStreams refuses an operator's stream beyond maxStreamsPerOperator with 429.
func (s *Server) limitStreams(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); !streamRoutes[pattern] {
			next.ServeHTTP(w, r)
			return
		}
		op, _ := operator.FromContext(r.Context())
		key := op.ID
		if key == "" {
			key = "subject " + op.Ident.Subject // an operator the full list did not record
		}
		s.streams.mu.Lock()
		if s.streams.open == nil {
			s.streams.open = map[string]int{}
		}
		if s.streams.open[key] >= maxStreamsPerOperator {
			s.streams.mu.Unlock()
			s.log.Warn("live stream refused: too many open", "operator", op.Name, "open", maxStreamsPerOperator)
			s.rd.Problem(w, r, web.Problem{Status: http.StatusTooManyRequests, Code: web.CodeTooMany, Title: "Too many live views open",
				What: "You have the live view (or ceremony events on the command line) open in many places at once already.",
				Todo: "Close the live view in tabs or terminals you no longer need, then reload."})
			return
		}
		s.streams.open[key]++
		s.streams.mu.Unlock()
		defer func() {
			s.streams.mu.Lock()
			if s.streams.open[key]--; s.streams.open[key] <= 0 {
				delete(s.streams.open, key)
			}
			s.streams.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}
