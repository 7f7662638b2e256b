package cyberjacksim

import (
	"time"
)

// CT-BCS status words this reader answers (HARDWARE.md §2).
var (
	swOK          = []byte{0x90, 0x00}
	swAsyncCard   = []byte{0x90, 0x01}
	swNoCard      = []byte{0x62, 0x00} // no card before the timeout / card not removed
	swAlready     = []byte{0x62, 0x01} // card already active
	swBadTag      = []byte{0x6A, 0x82}
	swWrongLength = []byte{0x67, 0x00}
	swBadINS      = []byte{0x6D, 0x00}
	swBadCLA      = []byte{0x6E, 0x00}
)

// maxDisplayText is what the e-com's display takes in one OUTPUT.
const maxDisplayText = 64

// ctbcs executes one CT-BCS command addressed to the terminal.
func (r *Reader) ctbcs(cmd []byte) ([]byte, error) {
	if len(cmd) < 4 {
		return swWrongLength, nil
	}
	if cmd[0] != 0x20 {
		return swBadCLA, nil
	}
	data, ok := commandData(cmd)
	if !ok {
		return swWrongLength, nil
	}
	tlv, ok := parseTLV(data)
	if !ok {
		return swWrongLength, nil
	}
	switch cmd[1] {
	case 0x17: // OUTPUT
		if r.noMKTComp() {
			return swBadINS, nil
		}
		for tag := range tlv {
			if tag != 0x50 && tag != 0x80 {
				return swBadTag, nil
			}
		}
		text, ok := tlv[0x50]
		if !ok {
			return swBadTag, nil
		}
		if len(text) > maxDisplayText {
			return swWrongLength, nil
		}
		r.mu.Lock()
		r.display = string(text)
		r.outputs = append(r.outputs, string(text))
		r.changed.Broadcast()
		r.mu.Unlock()
		return swOK, nil
	case 0x12: // REQUEST ICC
		return r.requestICC(cmd[3], tlv), nil
	case 0x15: // EJECT ICC
		return r.ejectICC(tlv), nil
	default:
		return swBadINS, nil
	}
}

// requestICC waits (up to the 80 01 timeout) for a card, powers it and answers with the ATR or
// its historical bytes as P2 asks. Cancel on the pad ends the wait.
func (r *Reader) requestICC(p2 byte, tlv map[byte][]byte) []byte {
	if text, ok := tlv[0x50]; ok && !r.noMKTComp() {
		r.setDisplay(string(text))
	}
	r.mu.Lock()
	if r.card != nil && r.powered {
		r.mu.Unlock()
		return swAlready
	}
	r.mu.Unlock()

	wait := time.Duration(0)
	if t, ok := tlv[0x80]; ok && len(t) == 1 {
		wait = time.Duration(t[0]) * time.Second
	}
	if !r.Present() && wait > 0 {
		if cancelled := r.waitFor(r.Present, wait, "Insert card"); cancelled {
			return swCancelled
		}
	}
	atr, err := r.PowerUp()
	if err != nil {
		return swNoCard
	}
	switch p2 & 0x0f {
	case 0x01:
		return append(atr, swAsyncCard...)
	case 0x02:
		return append(historicalBytes(atr), swAsyncCard...)
	default:
		return swAsyncCard
	}
}

// ejectICC powers the card down and waits (up to the 80 01 timeout) for its removal.
func (r *Reader) ejectICC(tlv map[byte][]byte) []byte {
	if !r.Present() {
		return swAsyncCard
	}
	r.PowerDown()
	t, ok := tlv[0x80]
	if !ok || len(t) != 1 || t[0] == 0 {
		return swOK
	}
	gone := func() bool { return !r.Present() }
	r.waitFor(gone, time.Duration(t[0])*time.Second, "Remove card")
	if gone() {
		return swAsyncCard
	}
	return swNoCard
}

// waitFor polls cond until it holds or timeout passes. While it waits the pad takes keys, so
// Cancel ends the wait; it reports whether that happened.
func (r *Reader) waitFor(cond func() bool, timeout time.Duration, prompt string) (cancelled bool) {
	r.mu.Lock()
	for len(r.keys) > 0 {
		<-r.keys
	}
	r.entry = prompt
	r.entrySeq++
	r.changed.Broadcast()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.entry = ""
		r.changed.Broadcast()
		r.mu.Unlock()
	}()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() && time.Now().Before(deadline) {
		select {
		case k := <-r.keys:
			if k == KeyCancel {
				return true
			}
		case <-tick.C:
		}
	}
	return false
}

// commandData returns the data field of a short command APDU (none when there is no Lc).
func commandData(cmd []byte) ([]byte, bool) {
	switch {
	case len(cmd) == 4, len(cmd) == 5: // no data; maybe Le
		return nil, true
	case int(cmd[4]) == len(cmd)-5 || int(cmd[4]) == len(cmd)-6: // Lc data [Le]
		return cmd[5 : 5+int(cmd[4])], true
	}
	return nil, false
}

// parseTLV reads simple one-byte-tag, one-byte-length TLVs.
func parseTLV(b []byte) (map[byte][]byte, bool) {
	out := map[byte][]byte{}
	for len(b) > 0 {
		if len(b) < 2 || int(b[1]) > len(b)-2 {
			return nil, false
		}
		out[b[0]] = b[2 : 2+int(b[1])]
		b = b[2+int(b[1]):]
	}
	return out, true
}

// historicalBytes extracts the historical bytes of an ATR (ISO 7816-3), or nil.
func historicalBytes(atr []byte) []byte {
	if len(atr) < 2 {
		return nil
	}
	k := int(atr[1] & 0x0f)
	i, y := 1, atr[1]
	for {
		for _, bit := range []byte{0x10, 0x20, 0x40} {
			if y&bit != 0 {
				i++
			}
		}
		if y&0x80 == 0 {
			break
		}
		i++
		if i >= len(atr) {
			return nil
		}
		y = atr[i]
	}
	start := i + 1
	if start+k > len(atr) {
		return nil
	}
	return atr[start : start+k]
}
