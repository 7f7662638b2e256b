package cyberjacksim

import (
	"errors"
	"fmt"
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
	swBadParam    = []byte{0x6A, 0x00}
)

// Key codes the pad's firmware reports to CT-BCS INPUT (CCIDReader.cpp, INS 16): digits 0–9,
// Cancel 10, OK 11. [I] Clear is taken to be 12: the driver ignores every code above 11.
const (
	codeCancel = 10
	codeOK     = 11
	codeClear  = 12
)

// inputDefaultTimeout is INPUT's wait for the first key without a tag 80 (CCIDReader.cpp: 15 s);
// every later key gets 5 s.
const (
	inputDefaultTimeout = 15 * time.Second
	inputNextKeyTimeout = 5 * time.Second
)

// maxDisplayText is what the e-com's display takes in one OUTPUT.
const maxDisplayText = 64

// ctbcs executes one CT-BCS command addressed to the terminal; maxOut is the room for the reply.
func (r *Reader) ctbcs(cmd []byte, maxOut int) ([]byte, error) {
	if len(cmd) < 4 {
		return swWrongLength, nil
	}
	if cmd[0] != 0x20 {
		return swBadCLA, nil
	}
	switch cmd[1] {
	case 0x13:
		return r.getStatus(cmd, maxOut)
	case 0x16:
		if r.noMKTComp() { // CCIDReader.cpp: INPUT on a class-3 reader needs MKT_COMP
			return swBadINS, nil
		}
		return r.input(cmd, maxOut)
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
		return r.requestICC(cmd[3], tlv)
	case 0x15: // EJECT ICC
		return r.ejectICC(tlv), nil
	default:
		return swBadINS, nil
	}
}

// requestICC waits (up to the 80 01 timeout) for a card, powers it and answers with the ATR or
// its historical bytes as P2 asks. Cancel on the pad ends the wait.
func (r *Reader) requestICC(p2 byte, tlv map[byte][]byte) ([]byte, error) {
	// A tag 50 text is ignored, as the real reader ignores it (HARDWARE.md §5).
	r.mu.Lock()
	if r.card != nil && r.powered {
		r.mu.Unlock()
		return swAlready, nil
	}
	r.mu.Unlock()

	wait := time.Duration(0)
	if t, ok := tlv[0x80]; ok && len(t) == 1 {
		wait = time.Duration(t[0]) * time.Second
	}
	if !r.Present() && wait > 0 {
		if cancelled := r.waitFor(r.Present, wait, "Insert card"); cancelled {
			return swCancelled, nil
		}
	}
	atr, err := r.PowerUp()
	switch {
	case errors.Is(err, ErrUnplugged):
		return nil, err
	case err != nil:
		return swNoCard, nil
	}
	switch p2 & 0x0f {
	case 0x01:
		return append(atr, swAsyncCard...), nil
	case 0x02:
		return append(historicalBytes(atr), swAsyncCard...), nil
	default:
		return swAsyncCard, nil
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
	r.beginEntry("card", prompt)
	defer r.endEntry(false)
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

// lengths splits a short command APDU into its data field and Le: hasLe is false when the
// command has no Le byte.
func lengths(cmd []byte) (data []byte, le int, hasLe bool, ok bool) {
	switch {
	case len(cmd) == 4:
		return nil, 0, false, true
	case len(cmd) == 5:
		return nil, int(cmd[4]), true, true
	case int(cmd[4]) == len(cmd)-5:
		return cmd[5:], 0, false, true
	case int(cmd[4]) == len(cmd)-6:
		return cmd[5 : len(cmd)-1], int(cmd[len(cmd)-1]), true, true
	}
	return nil, 0, false, false
}

// getStatus answers CT-BCS GET STATUS as CCIDReader.cpp does for the terminal (P1 00): P2 46
// the manufacturer data object "46 L DESCT CJECA V3.0; Rev. nnn", P2 80 the slot's state.
func (r *Reader) getStatus(cmd []byte, maxOut int) ([]byte, error) {
	if len(cmd) != 5 { // Lc absent, Le present
		return swWrongLength, nil
	}
	if cmd[2] != 0x00 || (cmd[3] != 0x46 && cmd[3] != 0x80) {
		return swBadParam, nil
	}
	if cmd[3] == 0x80 {
		if maxOut < 5 {
			return nil, ErrDriver
		}
		state := byte(0x00)
		r.mu.Lock()
		switch {
		case r.card != nil && r.powered:
			state = 0x05
		case r.card != nil:
			state = 0x03
		}
		r.mu.Unlock()
		return []byte{0x80, 0x01, state, 0x90, 0x00}, nil
	}
	fw := r.firmware()
	id := fmt.Sprintf("DESCTCJECA V%d.%d", fw.Version>>4, fw.Version&0x0f)
	switch {
	case maxOut >= 29:
		id += fmt.Sprintf("; Rev. %3d", fw.Revision)
	case maxOut < 19:
		return nil, ErrDriver
	}
	out := append([]byte{0x46, byte(len(id))}, id...)
	return append(out, swOK...), nil
}

// input runs CT-BCS INPUT `20 16 50 P2 [Lc [80 01 t] [50 L text]] Le` the way Reiner's driver
// does (CCIDReader.cpp, INS 16; EC30Reader.cpp cjInput): P2 low nibble 0 shows the text, 1
// echoes the keys, 2 shows stars; high nibble 1 returns raw key codes (then Le must be 01).
// With Le = 01 and P2 00: OK → 90 00, Cancel → 64 01, no key within t (default 15 s) → 64 00,
// a digit → the digit and 90 00.
func (r *Reader) input(cmd []byte, maxOut int) ([]byte, error) {
	data, le, hasLe, ok := lengths(cmd)
	if !ok || !hasLe {
		return swWrongLength, nil
	}
	p2 := cmd[3]
	if cmd[2] != 0x50 || p2&0x0f > 0x02 || p2&0xf0 > 0x10 || (p2&0xf0 == 0x10 && le != 1) {
		return swBadParam, nil
	}
	timeout := inputDefaultTimeout
	var text []byte
	if len(data) == 1 {
		timeout = time.Duration(data[0]) * time.Second
	} else if len(data) > 0 {
		tlv, ok := parseTLV(data)
		if !ok {
			return swWrongLength, nil
		}
		if t, ok := tlv[0x80]; ok {
			if len(t) != 1 {
				return swWrongLength, nil
			}
			timeout = time.Duration(t[0]) * time.Second
		}
		text = tlv[0x50]
	}
	if len(text) > maxDisplayText { // cjInput refuses it; the driver reports an error
		return nil, ErrDriver
	}
	n := le
	if n == 0 {
		n = 256
	}
	r.beginEntry("key", string(text))
	defer r.endEntry(false)
	var got []byte
	for i := 0; i < n; i++ {
		shown := string(text)
		switch p2 & 0x0f {
		case 0x01:
			shown += string(got)
		case 0x02:
			shown += stars(len(got))
		}
		r.setDisplay(shown)
		r.mu.Lock()
		r.outputs = append(r.outputs, shown)
		r.mu.Unlock()
		timer := time.NewTimer(timeout)
		k, pressed, err := r.nextKey(timer.C)
		timer.Stop()
		if err != nil {
			return nil, err
		}
		if !pressed {
			return swTimeout, nil
		}
		timeout = inputNextKeyTimeout
		code := keyCode(k)
		if p2&0xf0 == 0x10 {
			if (code != codeCancel && code != codeOK) || n == 1 {
				got = append(got, code)
				continue
			}
		} else if code < 10 {
			got = append(got, '0'+code)
			continue
		}
		switch code {
		case codeCancel:
			return swCancelled, nil
		case codeOK:
			i = n // the entry is complete
		default:
			i-- // Clear: the driver asks for the key again
		}
	}
	if maxOut < len(got)+2 {
		return nil, ErrDriver
	}
	return append(got, swOK...), nil
}

func keyCode(k Key) byte {
	switch {
	case k >= '0' && k <= '9':
		return byte(k - '0')
	case k == KeyCancel:
		return codeCancel
	case k == KeyOK:
		return codeOK
	}
	return codeClear
}
