package vcard

import (
	"encoding/json"
	"testing"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
)

// FuzzTransmit sends arbitrary APDUs (what vpcd or a reader driver hands the card) to a card in
// memory: it must answer each with at least a status word and never panic, and its PIN
// counters must stay within 0..max, and its state must still make a loadable file.
func FuzzTransmit(f *testing.F) {
	// Sequences of APDUs, each prefixed with its length.
	f.Add([]byte("\x04\x00\xa4\x00\x0c" + "\x07\x00\xa4\x08\x0c\x02\x4b\x01" + "\x0b\x00\x20\x00\x81\x06123456" + "\x05\x00\xb0\x00\x00\x02"))
	f.Add([]byte("\x0b\x00\x20\x00\x82\x06000000" + "\x11\x00\x24\x00\x82\x0c123456654321" + "\x08\x00\xd6\x00\x00\x02\xaa\xbb"))
	// Issue 16's commands: records of EF_PWDD, LIST DIRECTORY, CREATE FILE, APPEND RECORD,
	// the NullPIN change.
	f.Add([]byte("\x07\x00\xa4\x08\x0c\x02\x50\x49" + "\x05\x00\xb2\x01\x04\x00" + "\x05\x80\xaa\x02\x00\x00"))
	f.Add([]byte("\x14\x80\xe0\x00\x00\x0f\x6f\x0d\x82\x01\x38\x83\x02\xdf\x01\x84\x02KQ\x85\x01\x01" +
		"\x0e\x00\xe2\x00\x00\x09\xa0\x07\x83\x01\x81\x90\x02\x03\x03" +
		"\x11\x00\x24\x00\x81\x0c\x00\x00\x00\x00\x00\x00654321"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := NewWith("", Options{Serial: []byte{1, 2, 3}, Creatable: len(data) > 0 && data[0]&1 == 1, VerifyQuery: QuerySpends})
		if err != nil {
			t.Fatal(err)
		}
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			apdu := data[1 : 1+n]
			data = data[1+n:]
			resp, err := c.Transmit(apdu)
			if err != nil {
				t.Fatalf("transmit %x: %v", apdu, err)
			}
			if len(resp) < 2 {
				t.Fatalf("%x answered %x", apdu, resp)
			}
		}
		for _, p := range c.st.PINs {
			if p.Tries < 0 || p.Tries > p.Max || p.Max > 15 {
				t.Fatalf("tries %d of %d", p.Tries, p.Max)
			}
		}
		// Whatever the commands did, the card's state still makes a loadable file.
		b, err := json.Marshal(&c.st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decode(b); err != nil {
			t.Fatalf("state no longer loads: %v", err)
		}
	})
}

// FuzzDecode checks the card file decoder: any file either loads into a state whose invariants
// hold or is refused; none panics.
func FuzzDecode(f *testing.F) {
	for _, o := range []Options{{Profile: tcos.KeyquorumMF()}, {Profile: tcos.NetKeyDF01(), NullPIN: true, PINFiles: true}, {Creatable: true}} {
		o.Serial = []byte{9, 9}
		c, err := NewWith("", o)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := json.Marshal(&c.st)
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"serial":"AQI=","pins":{"81":{"pin":"MTIzNDU2","tries":3}},"files":{"2F02":"WgEB","4B01":"AAA="}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decode(b)
		if err != nil {
			return
		}
		for k, p := range st.PINs {
			if p.Tries < 0 || p.Tries > p.Max || !p.Null && len(p.PIN) == 0 {
				t.Fatalf("PIN %s accepted: %+v", k, p)
			}
		}
		c := &Card{st: st}
		c.Reset()
		for _, apdu := range [][]byte{{0x00, 0xA4, 0x08, 0x04, 0x02, 0x4B, 0x01, 0x00}, {0x80, 0xAA, 0x02, 0x00, 0x00}, {0x00, 0x20, 0x00, 0x81}} {
			if resp, err := c.Transmit(apdu); err != nil || len(resp) < 2 {
				t.Fatalf("%X: %X %v", apdu, resp, err)
			}
		}
	})
}
