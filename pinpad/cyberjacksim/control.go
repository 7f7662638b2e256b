package cyberjacksim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// The control protocol: one command per line, one answer per line, "ok[ payload]" or
// "err message", payloads quoted with strconv.Quote. Commands:
//
//	insert PATH       put the virtual card stored at PATH in the slot
//	remove            take the card out
//	keys TOKEN...     wait for the next PIN entry (up to 10 s), then press the keys: digit
//	                  strings, OK, CANCEL, CLEAR
//	press TOKEN...    press keys now, into the PIN entry in progress (no waiting)
//	state             display, entry prompt and kind, presence and cable, as JSON
//	stats             APDUs and control calls so far, as JSON
//	display           the text on the display
//	outputs           every text the host sent with OUTPUT, joined by newlines
//	entry             the prompt of the PIN entry in progress, "" when none
//	present           "yes" or "no"
//	firmware KIND     "no-mkt-comp": INPUT and OUTPUT answer 6D 00 from now on; "mkt-comp": they
//	                  work; "M.m.R" (e.g. 3.0.41): the kernel version GET STATUS reports, and
//	                  below 3.0.42 secure PIN entry is refused as not supported
//	unplug            pull the reader's USB cable (pcscd then sees the reader unavailable)
//	plug              put it back

// CardLoader opens the virtual card stored at path.
type CardLoader func(path string) (Card, error)

// keysWait bounds how long a keys command waits for the pad to ask for a PIN.
const keysWait = 10 * time.Second

// Serve answers control connections on l until l is closed.
func Serve(l net.Listener, r *Reader, load CardLoader, log *slog.Logger) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept control connection: %w", err)
		}
		go serveConn(c, r, load, log)
	}
}

func serveConn(c net.Conn, r *Reader, load CardLoader, log *slog.Logger) {
	defer c.Close()
	in := bufio.NewScanner(c)
	lastEntry := 0
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 {
			continue
		}
		payload, err := command(r, load, fields, &lastEntry)
		var answer string
		if err != nil {
			answer = "err " + err.Error()
			log.Info("cyberjacksim control", "command", fields[0], "err", err)
		} else {
			answer = "ok " + strconv.Quote(payload)
		}
		if _, err := io.WriteString(c, answer+"\n"); err != nil {
			return
		}
	}
}

func command(r *Reader, load CardLoader, f []string, lastEntry *int) (string, error) {
	switch f[0] {
	case "insert":
		if len(f) != 2 {
			return "", errors.New("usage: insert PATH")
		}
		card, err := load(f[1])
		if err != nil {
			return "", err
		}
		return "", r.Insert(card)
	case "remove":
		if c := r.Remove(); c == nil {
			return "", errors.New("remove card: the slot is empty")
		}
		return "", nil
	case "keys", "press":
		keys, err := parseKeys(f[1:])
		if err != nil {
			return "", err
		}
		if f[0] == "keys" { // wait for the next PIN entry first
			_, seq, err := r.WaitEntry(*lastEntry, keysWait)
			if err != nil {
				return "", err
			}
			*lastEntry = seq
		}
		for _, k := range keys {
			if err := r.Press(k); err != nil {
				return "", err
			}
		}
		return "", nil
	case "state":
		prompt, seq := r.Entry()
		b, err := json.Marshal(ReaderState{Display: r.Display(), Entry: prompt, Kind: r.EntryKind(), Entries: seq, Present: r.Present(), Plugged: r.Plugged()})
		return string(b), err
	case "stats":
		b, err := json.Marshal(r.Stats())
		return string(b), err
	case "display":
		return r.Display(), nil
	case "outputs":
		return strings.Join(r.Outputs(), "\n"), nil
	case "entry":
		prompt, _ := r.Entry()
		return prompt, nil
	case "firmware":
		if len(f) != 2 {
			return "", errors.New("usage: firmware mkt-comp|no-mkt-comp|MAJOR.MINOR.REVISION")
		}
		switch f[1] {
		case "mkt-comp", "no-mkt-comp":
			r.SetNoMKTComp(f[1] == "no-mkt-comp")
			return "", nil
		}
		fw, err := ParseFirmware(f[1])
		if err != nil {
			return "", err
		}
		r.SetFirmware(fw)
		return "", nil
	case "unplug":
		r.Unplug()
		return "", nil
	case "plug":
		r.Plug()
		return "", nil
	case "present":
		if r.Present() {
			return "yes", nil
		}
		return "no", nil
	}
	return "", fmt.Errorf("unknown command %q", f[0])
}

func parseKeys(tokens []string) ([]Key, error) {
	if len(tokens) == 0 {
		return nil, errors.New("usage: keys TOKEN...")
	}
	var keys []Key
	for _, t := range tokens {
		switch strings.ToUpper(t) {
		case "OK":
			keys = append(keys, KeyOK)
		case "CANCEL":
			keys = append(keys, KeyCancel)
		case "CLEAR":
			keys = append(keys, KeyClear)
		default:
			for _, d := range t {
				if d < '0' || d > '9' {
					return nil, fmt.Errorf("keys: %q is not a key", t)
				}
				keys = append(keys, Key(d))
			}
		}
	}
	return keys, nil
}

// Client speaks the control protocol to a virtual reader. It is not safe for concurrent use.
type Client struct {
	conn net.Conn
	in   *bufio.Reader
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to virtual reader: %w", err)
	}
	return &Client{conn: c, in: bufio.NewReader(c)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) do(cmd string) (string, error) {
	if _, err := io.WriteString(c.conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("virtual reader %s: %w", strings.Fields(cmd)[0], err)
	}
	line, err := c.in.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("virtual reader %s: %w", strings.Fields(cmd)[0], err)
	}
	line = strings.TrimSuffix(line, "\n")
	if msg, ok := strings.CutPrefix(line, "err "); ok {
		return "", fmt.Errorf("virtual reader: %s", msg)
	}
	payload, ok := strings.CutPrefix(line, "ok ")
	if !ok {
		return "", fmt.Errorf("virtual reader: bad answer %q", line)
	}
	return strconv.Unquote(payload)
}

// Insert puts the card stored at path in the slot.
func (c *Client) Insert(path string) error { _, err := c.do("insert " + path); return err }

// Remove takes the card out.
func (c *Client) Remove() error { _, err := c.do("remove"); return err }

// Keys waits for the pad's next PIN entry and presses keys: digit strings, "OK", "CANCEL",
// "CLEAR".
func (c *Client) Keys(keys ...string) error {
	_, err := c.do("keys " + strings.Join(keys, " "))
	return err
}

// Press presses keys into the PIN entry in progress, without waiting for one.
func (c *Client) Press(keys ...string) error {
	_, err := c.do("press " + strings.Join(keys, " "))
	return err
}

// ReaderState is what the virtual reader shows and holds.
type ReaderState struct {
	Display string `json:"display"`
	Entry   string `json:"entry"` // the prompt of the entry in progress ("Enter PIN", "Insert card"), "" when none
	// Kind is what the entry waits for: "pin", "key" (CT-BCS INPUT: OK or Cancel), "card"
	// (REQUEST ICC), "" when none.
	Kind string `json:"kind"`
	// Entries counts the waits for keys the pad has begun.
	Entries int  `json:"entries"`
	Present bool `json:"present"`
	Plugged bool `json:"plugged"`
}

// State returns the reader's display, entry prompt and whether a card is in.
func (c *Client) State() (ReaderState, error) {
	var st ReaderState
	s, err := c.do("state")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(s), &st)
}

// Stats returns the reader's APDU and control counters.
func (c *Client) Stats() (Stats, error) {
	var st Stats
	s, err := c.do("stats")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal([]byte(s), &st)
}

// Display returns the text on the pad's display.
func (c *Client) Display() (string, error) { return c.do("display") }

// Outputs returns every text the host sent to the display, oldest first.
func (c *Client) Outputs() ([]string, error) {
	s, err := c.do("outputs")
	if err != nil || s == "" {
		return nil, err
	}
	return strings.Split(s, "\n"), nil
}

// Entry returns the prompt of the PIN entry in progress, "" when none.
func (c *Client) Entry() (string, error) { return c.do("entry") }

// SetFirmware makes the reader behave as firmware with (true) or without (false) the MKT_COMP
// display module.
func (c *Client) SetFirmware(mktComp bool) error {
	kind := "mkt-comp"
	if !mktComp {
		kind = "no-mkt-comp"
	}
	_, err := c.do("firmware " + kind)
	return err
}

// SetFirmwareVersion makes the reader report kernel version fw ("3.0.41"); below 3.0.42 it
// refuses secure PIN entry as the real driver does.
func (c *Client) SetFirmwareVersion(fw string) error {
	_, err := c.do("firmware " + fw)
	return err
}

// Unplug pulls the reader's cable; Plug puts it back.
func (c *Client) Unplug() error { _, err := c.do("unplug"); return err }

// Plug puts the reader's cable back in.
func (c *Client) Plug() error { _, err := c.do("plug"); return err }

// Present reports whether a card is in the slot.
func (c *Client) Present() (bool, error) {
	s, err := c.do("present")
	return s == "yes", err
}
