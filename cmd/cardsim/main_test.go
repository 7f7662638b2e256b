package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/pinpad/vpcd"
)

// TestCommands drives cardsim as a person would, with a listener standing in for vpcd.
func TestCommands(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	in, feed := io.Pipe()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, dir, l.Addr().String(), "", in, &out) }()

	feed.Write([]byte("new\nforeign\n"))
	serial := waitLine(t, &out, func(s string) bool { return len(s) == 16 })
	feed.Write([]byte("list\ninsert " + serial + "\n"))
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, _ := vpcd.AppendMessage(nil, []byte{0x04})
	conn.Write(msg)
	atr, err := vpcd.ReadMessage(conn)
	if err != nil || !bytes.Equal(atr, tcos.ATR) {
		t.Fatalf("ATR %x %v", atr, err)
	}
	feed.Write([]byte("remove\nbogus\nquit\n"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{serial + " tcos pin-3F00:81-tries=3 pin-3F00:82-tries=3", " foreign", "inserted " + serial, "removed", `error: unknown command "bogus"`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestShapes(t *testing.T) {
	o, err := shapeOf([]string{"profile=netkey-df01", "nullpin", "query=6A88", "atr=9f", "pinfiles"})
	if err != nil || o.Profile.Name != "netkey-df01" || !o.NullPIN || o.VerifyQuery != vcard.QueryRefNotFound || !bytes.Equal(o.ATR, tcos.ATRNoTB1) || !o.PINFiles {
		t.Fatalf("%+v, %v", o, err)
	}
	if o, err := shapeOf([]string{"blank", "creatable"}); err != nil || o.Profile != nil || !o.Creatable {
		t.Fatalf("%+v, %v", o, err)
	}
	for _, bad := range []string{"profile=nope", "query=maybe", "atr=bf", "shiny"} {
		if _, err := shapeOf([]string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func waitLine(t *testing.T, out *syncBuffer, match func(string) bool) string {
	t.Helper()
	for range 200 {
		for _, line := range strings.Split(out.String(), "\n") {
			if match(line) {
				return line
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no matching line in %q", out.String())
	return ""
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
