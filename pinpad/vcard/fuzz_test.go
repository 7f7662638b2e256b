package vcard

import "testing"

// FuzzTransmit sends arbitrary APDUs (what vpcd or a reader driver hands the card) to a card in
// memory: it must answer each with at least a status word and never panic, and its PIN
// counters must stay within 0..3.
func FuzzTransmit(f *testing.F) {
	// Sequences of APDUs, each prefixed with its length.
	f.Add([]byte("\x04\x00\xa4\x00\x0c" + "\x07\x00\xa4\x08\x0c\x02\x4b\x01" + "\x0b\x00\x20\x00\x81\x06123456" + "\x05\x00\xb0\x00\x00\x02"))
	f.Add([]byte("\x0b\x00\x20\x00\x82\x06000000" + "\x11\x00\x24\x00\x82\x0c123456654321" + "\x08\x00\xd6\x00\x00\x02\xaa\xbb"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := New("", []byte{1, 2, 3})
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
			if p.Tries < 0 || p.Tries > 3 {
				t.Fatalf("tries %d", p.Tries)
			}
		}
	})
}
