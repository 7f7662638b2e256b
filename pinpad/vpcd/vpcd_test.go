package vpcd

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
)

// TestProtocol plays vpcd's side of the wire against a card served by a Slot.
func TestProtocol(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	card, err := vcard.New("", []byte{0xAB})
	if err != nil {
		t.Fatal(err)
	}
	slot := NewSlot(l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := slot.Insert(ctx, card); err != nil {
		t.Fatal(err)
	}
	if err := slot.Insert(ctx, card); err != ErrOccupied {
		t.Errorf("second insert: %v", err)
	}
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	send := func(payload []byte) {
		msg, _ := AppendMessage(nil, payload)
		// vpcd writes the length and the payload separately.
		conn.Write(msg[:2])
		conn.Write(msg[2:])
	}
	send([]byte{ctlPowerOn})
	send([]byte{ctlGetATR})
	atr, err := ReadMessage(conn)
	if err != nil || !bytes.Equal(atr, tcos.ATR) {
		t.Fatalf("ATR %x %v", atr, err)
	}
	send([]byte{0x00, 0xA4, 0x08, 0x0C, 0x02, 0x2F, 0x02})
	if resp, err := ReadMessage(conn); err != nil || !bytes.Equal(resp, []byte{0x90, 0x00}) {
		t.Fatalf("select %x %v", resp, err)
	}
	send([]byte{0x00, 0xB0, 0x00, 0x00, 0x03})
	if resp, err := ReadMessage(conn); err != nil || !bytes.Equal(resp, []byte{0x5A, 0x01, 0xAB, 0x90, 0x00}) {
		t.Fatalf("read %x %v", resp, err)
	}
	if !slot.Inserted() {
		t.Error("not inserted")
	}
	if err := slot.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMessage(conn); err == nil {
		t.Error("the connection stayed open after Remove")
	}
	if slot.Inserted() {
		t.Error("still inserted")
	}
	if err := slot.Remove(); err == nil {
		t.Error("remove from an empty slot")
	}
}

// FuzzReadMessage checks the framing: no panic, and a message read frames back to the bytes
// it came from.
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x04})
	f.Add([]byte{0x00, 0x04, 0x00, 0xA4, 0x00, 0x0C})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := ReadMessage(bytes.NewReader(b))
		if err != nil {
			return
		}
		framed, err := AppendMessage(nil, msg)
		if err != nil || !bytes.Equal(framed, b[:2+len(msg)]) {
			t.Fatalf("round trip %x -> %x", b, framed)
		}
	})
}
