// Package vpcd connects a virtual card to pcsc-lite through vsmartcard's vpcd reader driver,
// so the real PC/SC stack (pcscd, libpcsclite, ebfe/scard, the pcsc backend) talks to it as to
// a card in a reader.
//
// The wire (docs/design.md, "Real components"): vpcd listens on TCP (35963 for its first slot) and
// the card is the client. Every message either way is a 2-byte big-endian length and a
// payload. A 1-byte payload from vpcd is a control message — 00 power off, 01 power on,
// 02 reset, 04 get ATR, of which only 04 is answered (with the ATR); anything longer is a
// command APDU answered by a response APDU. Connecting is inserting the card, closing the
// connection removing it. pcscd polls about every 400 ms, so both take that long to be seen;
// after a removal wait for the reader to be empty before inserting again.
//
// Debian's vpcd writes length and payload in two writes: without TCP_QUICKACK on the card's
// socket, set again before every read, each APDU costs ~40 ms of Nagle and delayed ACK.
//
// What this package must never do: reach beyond the vpcd port it is given; it is a test and
// demo instrument and adds nothing to a production appliance.
package vpcd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
)

// DefaultAddr is vpcd's first slot on this machine.
const DefaultAddr = "127.0.0.1:35963"

// Card is a virtual card: an ATR, APDUs, and a power cycle that forgets its security state.
// pinpad/vcard's Card is one.
type Card interface {
	ATR() []byte
	Transmit(apdu []byte) ([]byte, error)
	Reset()
}

// Control messages from vpcd.
const (
	ctlPowerOff = 0x00
	ctlPowerOn  = 0x01
	ctlReset    = 0x02
	ctlGetATR   = 0x04
)

// Slot is one vpcd slot a card can be inserted into.
type Slot struct {
	addr string

	mu   sync.Mutex
	conn net.Conn
	done chan struct{} // closed when the current connection's server ends
	err  error         // why the last connection ended, nil after Remove
}

// NewSlot returns the slot vpcd serves at addr ("127.0.0.1:35963").
func NewSlot(addr string) *Slot { return &Slot{addr: addr} }

// ErrOccupied is an Insert into a slot that holds a card.
var ErrOccupied = errors.New("a card is already inserted in this vpcd slot")

// Insert connects card to vpcd: the reader then sees a card. It returns once connected; the
// card is served in the background until Remove or until vpcd closes the connection.
func (s *Slot) Insert(ctx context.Context, card Card) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		select {
		case <-s.done:
		default:
			return ErrOccupied
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("insert card: %w", err)
	}
	s.conn, s.done, s.err = conn, make(chan struct{}), nil
	done := s.done
	go func() {
		err := serve(conn, card)
		s.mu.Lock()
		if s.conn == conn {
			s.err = err
		}
		s.mu.Unlock()
		close(done)
	}()
	return nil
}

// Remove closes the connection: the reader sees the card go. It waits until the card is no
// longer served.
func (s *Slot) Remove() error {
	s.mu.Lock()
	conn, done := s.conn, s.done
	s.conn = nil
	s.mu.Unlock()
	if conn == nil {
		return errors.New("remove card: no card inserted")
	}
	conn.Close()
	<-done
	return nil
}

// Inserted reports whether a card is connected and served.
func (s *Slot) Inserted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Err is why the last connection ended on its own (vpcd went away, a card failure).
func (s *Slot) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// quickAck sets TCP_QUICKACK; Linux clears it again after some ACKs, so it is set before every
// read.
func quickAck(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpQuickAck, 1)
	})
}

const tcpQuickAck = 0x0C // TCP_QUICKACK, linux/tcp.h

// MaxMessage bounds a message: a short or extended APDU and then some.
const MaxMessage = 0xFFFF

// ReadMessage reads one length-prefixed message.
func ReadMessage(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// AppendMessage frames payload: 2-byte big-endian length, then the payload.
func AppendMessage(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxMessage {
		return nil, fmt.Errorf("frame message: %d bytes", len(payload))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	return append(dst, payload...), nil
}

// serve answers vpcd until the connection closes.
func serve(conn net.Conn, card Card) error {
	defer conn.Close()
	for {
		quickAck(conn)
		msg, err := ReadMessage(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read from vpcd: %w", err)
		}
		var reply []byte
		switch {
		case len(msg) == 1:
			switch msg[0] {
			case ctlGetATR:
				reply = card.ATR()
			case ctlPowerOff, ctlPowerOn, ctlReset:
				card.Reset()
				continue
			default:
				continue
			}
		case len(msg) == 0:
			continue
		default:
			reply, err = card.Transmit(msg)
			clear(msg)
			if err != nil {
				return fmt.Errorf("card: %w", err) // a card that cannot answer is a dead card
			}
		}
		out, err := AppendMessage(make([]byte, 0, 2+len(reply)), reply)
		clear(reply)
		if err != nil {
			return err
		}
		_, err = conn.Write(out)
		clear(out)
		if err != nil {
			return fmt.Errorf("write to vpcd: %w", err)
		}
	}
}
