package webconf

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// The connection deadlines (see Serve). A request's headers must arrive within
// readHeaderTimeout (and the TLS handshake within it); its body within readTimeout of the start
// of the request — for an operator's request, within readTimeout of the last piece that came
// in, so that a large backup uploads at any pace that keeps moving. Every write must get through
// within writeTimeout: a client that stops reading loses its connection, a stream that keeps
// going (the live view, a backup download) extends the deadline before each write. A
// connection idle between requests is closed after idleTimeout. At most DefaultMaxConnections
// connections are served at once; further ones wait in the kernel's accept queue.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = time.Minute
	idleTimeout       = 2 * time.Minute

	// DefaultMaxConnections bounds the connections served at once (Config.MaxConnections):
	// an appliance has a handful of operators, each browser holds a few connections.
	DefaultMaxConnections = 256
)

// deadlines moves an operator's request from the server's fixed deadlines to ones that follow
// progress: its body may take as long as it keeps coming, its response as long as the client
// keeps reading. A request without a body has no read deadline while its handler runs (HTTP/1's
// background read would otherwise end a long stream's context at the fixed deadline). It runs
// after the client certificate was admitted: a request without one keeps the fixed deadlines,
// and its body is never read (requireClientCert answers and closes the connection).
func deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			rc.SetReadDeadline(time.Time{})
		} else {
			r.Body = &progressBody{ReadCloser: r.Body, rc: rc}
		}
		next.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc}, r)
	})
}

// extendEvery is how often a deadline that follows progress is moved on: at most once a second
// (HTTP/2 moves a stream's deadline through its connection's goroutine), which matters nothing
// against deadlines of 30 s and more.
const extendEvery = time.Second

// progressBody extends the read deadline before each read and lifts it at the end of the body.
type progressBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	last time.Time
}

func (b *progressBody) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(b.last) >= extendEvery {
		b.rc.SetReadDeadline(now.Add(readTimeout))
		// The answer comes after the upload: its write deadline (HTTP/2: the stream's) moves
		// with the upload's progress too.
		b.rc.SetWriteDeadline(now.Add(writeTimeout))
		b.last = now
	}
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// progressWriter extends the write deadline before each write and flush. Unwrap lets
// http.ResponseController reach the connection (SetReadDeadline, EnableFullDuplex).
type progressWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	last time.Time
}

func (w *progressWriter) extend() {
	if now := time.Now(); now.Sub(w.last) >= extendEvery {
		w.rc.SetWriteDeadline(now.Add(writeTimeout))
		w.last = now
	}
}

func (w *progressWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *progressWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
