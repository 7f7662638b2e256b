// Package cyberjacksim is a virtual Reiner SCT cyberJack e-com: the reader logic behind a
// pcsc-lite driver (cmd/ifd-cyberjacksim) that lets the real PC/SC stack — pcscd, ebfe/scard and
// Keyquorum's pcsc backend — be driven end to end with a PIN pad and no hardware.
//
// It behaves the way Reiner's own Linux driver presents the reader (see docs/hardware.md in
// the repository): the PC/SC part 10 features 06 VERIFY_PIN_DIRECT, 07 MODIFY_PIN_DIRECT,
// 08 MCT_READER_DIRECT and 09 MCT_UNIVERSAL under Reiner's control codes, no PIN or display
// properties, PIN structures refused unless exactly 19+n / 24+n bytes long and shaped as Reiner's
// own structure builder shapes them, and the CT-BCS commands GET STATUS, INPUT, OUTPUT, REQUEST
// ICC and EJECT ICC through MCT. A reader configured as firmware without the MKT_COMP module
// answers INPUT and OUTPUT with 6D 00; one configured with a kernel older than 3.0.42 refuses
// secure PIN entry as "not supported", as the real driver does on such firmware.
//
// Card movements and unplugging are events: [Reader.WaitEvent] returns when one happens, which
// the driver hands pcscd as its polling function (TAG_IFD_POLLING_THREAD_WITH_TIMEOUT, as
// libccid does for readers with an interrupt endpoint), so pcscd learns of a card at once
// instead of at its next 400 ms presence poll.
//
// What a person does at the pad — typing digits, OK, Cancel, Clear, inserting and removing a
// card, or doing nothing until the pad gives up — arrives through [Reader.Press],
// [Reader.Insert] and [Reader.Remove], which the control socket ([Serve], [Dial]) exposes to
// tests and to the simulator panel.
//
// The PIN typed on this virtual pad goes into the card's APDU inside the reader and nowhere
// else, as on the real pad: the host only sees the card's status word. This package is a test
// and demo instrument; it must never be mistaken for, or deployed as, a real reader.
package cyberjacksim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Card is a virtual smart card as the reader sees it: an ATR and an APDU interface.
type Card interface {
	ATR() []byte
	// Transmit runs one command APDU and returns the response APDU (data and status word).
	Transmit(apdu []byte) ([]byte, error)
}

// Part 10 control codes as pcsc-lite numbers them: SCARD_CTL_CODE(x) = 0x42000000 + x.
const (
	CtlGetFeatureRequest = 0x42000000 + 3400 // CM_IOCTL_GET_FEATURE_REQUEST
	// Reiner's driver maps features 06..09 to SCARD_CTL_CODE(3506..3509).
	CtlVerifyPINDirect = 0x42000000 + 3506
	CtlModifyPINDirect = 0x42000000 + 3507
	CtlMCTReaderDirect = 0x42000000 + 3508
	CtlMCTUniversal    = 0x42000000 + 3509
)

// Feature tags of PC/SC part 10.
const (
	FeatureVerifyPINDirect = 0x06
	FeatureModifyPINDirect = 0x07
	FeatureMCTReaderDirect = 0x08
	FeatureMCTUniversal    = 0x09
)

// Errors of the reader. A driver maps them to IFD response codes.
var (
	ErrNoCard        = errors.New("no card in the reader")
	ErrNotPowered    = errors.New("the card is not powered")
	ErrBadStructure  = errors.New("malformed control structure")
	ErrUnsupported   = errors.New("control code not supported")
	ErrOutputTooLong = errors.New("output buffer too small")
	// ErrUnplugged is every operation of a reader whose USB cable is out: the driver answers
	// IFD_NO_SUCH_DEVICE, as libccid does for a disconnected reader.
	ErrUnplugged = errors.New("the reader is unplugged")
	// ErrDriver is a command the real driver ends with an internal error (its -128 / -11
	// returns), which the IFD handler reports as IFD_COMMUNICATION_ERROR.
	ErrDriver = errors.New("the reader's driver failed the command")
)

// Key is a key of the pad.
type Key byte

// The keys besides the digits '0'..'9'.
const (
	KeyOK     Key = 'O'
	KeyCancel Key = 'C'
	KeyClear  Key = 'X'
)

// Options configure a Reader.
type Options struct {
	// NoMKTComp makes the reader behave like firmware without the MKT_COMP module: CT-BCS
	// OUTPUT answers 6D 00 and nothing reaches the display.
	NoMKTComp bool
	// DefaultTimeout is the PIN entry timeout used when a structure says 00 (reader default).
	DefaultTimeout time.Duration
	// Firmware is the version of the reader's kernel module; zero means DefaultFirmware.
	Firmware Firmware
	// Unplugged starts the reader with its cable out.
	Unplugged bool
}

// Firmware is a cyberJack kernel module's version, as Reiner's driver reads it: Version is a
// byte 0xMm (0x30 = 3.0) and Revision a number, printed "V3.0; Rev. 45" by GET STATUS.
type Firmware struct {
	Version  byte
	Revision int
}

func (f Firmware) String() string {
	return fmt.Sprintf("%d.%d.%d", f.Version>>4, f.Version&0x0f, f.Revision)
}

// PINDirectSupported is Reiner's rule (CCIDReader.cpp PinDirectSupported): secure PIN entry
// through part 10 needs kernel 3.0.42 or newer.
func (f Firmware) PINDirectSupported() bool {
	return f.Version > 0x30 || f.Version == 0x30 && f.Revision >= 42
}

// ParseFirmware reads "3.0.45" (major.minor.revision).
func ParseFirmware(s string) (Firmware, error) {
	var major, minor, rev int
	if n, err := fmt.Sscanf(s, "%d.%d.%d", &major, &minor, &rev); err != nil || n != 3 ||
		major < 0 || major > 15 || minor < 0 || minor > 15 || rev < 0 || rev > 999 || fmt.Sprintf("%d.%d.%d", major, minor, rev) != s {
		return Firmware{}, fmt.Errorf("firmware %q: want MAJOR.MINOR.REVISION, e.g. 3.0.45", s)
	}
	return Firmware{Version: byte(major<<4 | minor), Revision: rev}, nil
}

// DefaultFirmware is what the virtual reader reports unless told otherwise. [U] the revision a
// shipped e-com(a) carries is not public; any revision from 42 on takes secure PIN entry.
var DefaultFirmware = Firmware{Version: 0x30, Revision: 45}

// OldFirmware is a kernel below 3.0.42: the driver lists the part 10 features but refuses
// VERIFY_PIN_DIRECT and MODIFY_PIN_DIRECT as not supported.
var OldFirmware = Firmware{Version: 0x30, Revision: 41}

// Reader is one virtual cyberJack e-com with one card slot.
type Reader struct {
	opts Options

	mu       sync.Mutex
	changed  *sync.Cond // signalled on every change of card, entry or display
	card     Card
	powered  bool
	display  string
	outputs  []string // every text the host sent with OUTPUT, in order
	entry    string   // prompt of the PIN entry in progress, "" when none
	entrySeq int      // counts PIN entries, so a waiter can tell a new one from the last
	keys     chan Key
	events   uint64 // counts insertions and removals
	// seenEmpty is whether the host has polled the slot empty since the last removal. A hand
	// cannot swap cards faster than pcscd polls (~400 ms); a control socket can, and pcscd
	// would then never notice that the card changed and must be powered again.
	seenEmpty bool

	unplugged bool
	// plugs counts unplug and plug events; WaitEvent compares it and events with what the
	// host's last presence poll saw.
	plugs     uint64
	polled    [2]uint64     // events and plugs as of the last Poll
	stopWaits uint64        // bumped by StopWaiting
	entryKind string        // "pin", "card" (REQUEST ICC), "key" (INPUT); "" when no entry runs
	gone      chan struct{} // closed while the reader is unplugged

	apdus    atomic.Uint64 // APDUs the card answered, from the host or built by the pad
	controls atomic.Uint64 // part 10 control calls
}

// Stats counts what the reader has done since it was made.
type Stats struct {
	APDUs    uint64 `json:"apdus"`
	Controls uint64 `json:"controls"`
}

// Stats returns the reader's counters.
func (r *Reader) Stats() Stats {
	return Stats{APDUs: r.apdus.Load(), Controls: r.controls.Load()}
}

// transmitTo sends apdu to card, counting it.
func (r *Reader) transmitTo(card Card, apdu []byte) ([]byte, error) {
	r.apdus.Add(1)
	return card.Transmit(apdu)
}

// NewReader returns a reader with an empty slot.
func NewReader(opts Options) *Reader {
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 30 * time.Second
	}
	if opts.Firmware == (Firmware{}) {
		opts.Firmware = DefaultFirmware
	}
	r := &Reader{opts: opts, keys: make(chan Key, 64), display: "REINER SCT\rcyberJack e-com", seenEmpty: true, unplugged: opts.Unplugged}
	r.changed = sync.NewCond(&r.mu)
	r.gone = make(chan struct{})
	if r.unplugged {
		close(r.gone)
	}
	return r
}

// insertWait bounds how long Insert waits for the host to notice the previous removal.
const insertWait = 3 * time.Second

// Insert puts card in the slot (unpowered); a card already there is an error. After a removal
// it first waits (up to insertWait) until the host has polled the slot empty, as the time a
// hand takes to swap cards guarantees with a real reader.
func (r *Reader) Insert(card Card) error {
	timer := time.AfterFunc(insertWait, func() {
		r.mu.Lock()
		r.changed.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(insertWait)
	r.mu.Lock()
	defer r.mu.Unlock()
	for !r.seenEmpty && r.card == nil && time.Now().Before(deadline) {
		r.changed.Wait()
	}
	if r.card != nil {
		return errors.New("insert card: the slot is occupied")
	}
	r.card, r.powered = card, false
	r.events++
	r.changed.Broadcast()
	return nil
}

// Remove takes the card out of the slot, if any, and returns it.
func (r *Reader) Remove() Card {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.card
	if c != nil {
		r.card, r.powered, r.seenEmpty = nil, false, false
		r.events++
		r.changed.Broadcast()
	}
	return c
}

// Unplug pulls the reader's USB cable: every host operation fails with [ErrUnplugged] until Plug,
// a PIN entry or key wait in progress ends, and a card in the slot stays there, unpowered.
func (r *Reader) Unplug() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unplugged {
		return
	}
	r.unplugged, r.powered = true, false
	close(r.gone)
	if p, ok := r.card.(interface{ Reset() }); ok {
		p.Reset()
	}
	r.plugs++
	r.changed.Broadcast()
}

// Plug puts the cable back in.
func (r *Reader) Plug() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.unplugged {
		return
	}
	r.unplugged = false
	r.gone = make(chan struct{})
	r.plugs++
	r.changed.Broadcast()
}

// Plugged reports whether the reader's cable is in.
func (r *Reader) Plugged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.unplugged
}

// SetFirmware changes the reader's kernel version (a firmware update, or a test of an old one).
func (r *Reader) SetFirmware(f Firmware) {
	r.mu.Lock()
	r.opts.Firmware = f
	r.mu.Unlock()
}

func (r *Reader) firmware() Firmware {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.Firmware
}

// WaitEvent blocks until the slot or the cable changed since the host's last presence poll
// ([Reader.Poll]), timeout passes, or StopWaiting is called. It is the driver's IFDHPolling: pcscd
// calls it between presence polls, so a card movement reaches pcscd as soon as it happens.
func (r *Reader) WaitEvent(timeout time.Duration) {
	timer := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		r.changed.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	r.mu.Lock()
	defer r.mu.Unlock()
	stop := r.stopWaits
	for r.polled == [2]uint64{r.events, r.plugs} && r.stopWaits == stop && time.Now().Before(deadline) {
		r.changed.Wait()
	}
}

// StopWaiting ends every WaitEvent in progress (IFDHStopPolling, when pcscd removes the reader).
func (r *Reader) StopWaiting() {
	r.mu.Lock()
	r.stopWaits++
	r.changed.Broadcast()
	r.mu.Unlock()
}

// SetNoMKTComp switches between firmware with and without the MKT_COMP display module.
func (r *Reader) SetNoMKTComp(without bool) {
	r.mu.Lock()
	r.opts.NoMKTComp = without
	r.mu.Unlock()
}

func (r *Reader) noMKTComp() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts.NoMKTComp
}

// Poll is the host's presence poll (IFDHICCPresence): whether a card is in the slot, or
// [ErrUnplugged].
func (r *Reader) Poll() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.polled = [2]uint64{r.events, r.plugs}
	if r.unplugged {
		return false, ErrUnplugged
	}
	if r.card == nil && !r.seenEmpty {
		r.seenEmpty = true
		r.changed.Broadcast()
	}
	return r.card != nil, nil
}

// Present reports whether a card is in the slot.
func (r *Reader) Present() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.card != nil
}

// PowerUp powers the card and returns its ATR.
func (r *Reader) PowerUp() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unplugged {
		return nil, ErrUnplugged
	}
	if r.card == nil {
		return nil, ErrNoCard
	}
	r.powered = true
	return r.card.ATR(), nil
}

// PowerDown powers the card off; a verified PIN does not survive it.
func (r *Reader) PowerDown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.powered = false
	if p, ok := r.card.(interface{ Reset() }); ok {
		p.Reset()
	}
}

// ATR returns the inserted card's ATR.
func (r *Reader) ATR() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unplugged {
		return nil, ErrUnplugged
	}
	if r.card == nil {
		return nil, ErrNoCard
	}
	return r.card.ATR(), nil
}

// Transmit sends an APDU to the powered card.
func (r *Reader) Transmit(apdu []byte) ([]byte, error) {
	card, err := r.poweredCard()
	if err != nil {
		return nil, err
	}
	return r.transmitTo(card, apdu)
}

func (r *Reader) poweredCard() (Card, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.unplugged:
		return nil, ErrUnplugged
	case r.card == nil:
		return nil, ErrNoCard
	case !r.powered:
		return nil, ErrNotPowered
	}
	return r.card, nil
}

// Display is the text on the pad's display now.
func (r *Reader) Display() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.display
}

// Outputs returns every text the host has sent with CT-BCS OUTPUT, oldest first.
func (r *Reader) Outputs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.outputs...)
}

func (r *Reader) setDisplay(text string) {
	r.mu.Lock()
	r.display = text
	r.changed.Broadcast()
	r.mu.Unlock()
}

// Press is a key pressed on the pad. Keys pressed while no PIN entry is running are dropped,
// as on the real pad.
func (r *Reader) Press(k Key) error {
	switch {
	case k >= '0' && k <= '9', k == KeyOK, k == KeyCancel, k == KeyClear:
	default:
		return fmt.Errorf("press key: unknown key %q", rune(k))
	}
	r.mu.Lock()
	active := r.entryKind != ""
	r.mu.Unlock()
	if !active {
		return errors.New("press key: the pad is not waiting for a key")
	}
	select {
	case r.keys <- k:
		return nil
	default:
		return errors.New("press key: too many keys pressed")
	}
}

// WaitEntry waits until a PIN entry newer than after is running, and returns its prompt and
// sequence number. It gives up after timeout.
func (r *Reader) WaitEntry(after int, timeout time.Duration) (prompt string, seq int, err error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		r.mu.Lock()
		r.changed.Broadcast()
		r.mu.Unlock()
	})
	defer timer.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.entryKind == "" || r.entrySeq <= after {
		if !time.Now().Before(deadline) {
			return "", 0, errors.New("wait for PIN entry: none started")
		}
		r.changed.Wait()
	}
	return r.entry, r.entrySeq, nil
}

// Entry reports the prompt of the PIN entry in progress ("" when none) and its number.
func (r *Reader) Entry() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entry, r.entrySeq
}

// EntryKind is what the pad waits for: "pin" (a secure PIN entry), "key" (CT-BCS INPUT: OK or
// Cancel), "card" (REQUEST ICC), "" when it waits for nothing.
func (r *Reader) EntryKind() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.entryKind
}

// beginEntry starts a wait for keys: it drops keys pressed before it and shows prompt.
func (r *Reader) beginEntry(kind, prompt string) {
	r.mu.Lock()
	for len(r.keys) > 0 { // keys pressed before the prompt do not count
		<-r.keys
	}
	r.entry, r.entryKind = prompt, kind
	r.entrySeq++
	r.changed.Broadcast()
	r.mu.Unlock()
}

func (r *Reader) endEntry(blank bool) {
	r.mu.Lock()
	r.entry, r.entryKind = "", ""
	if blank {
		r.display = ""
	}
	r.changed.Broadcast()
	r.mu.Unlock()
}

// nextKey waits for a key until timer fires: ok false on timeout, err [ErrUnplugged] when the
// cable is pulled meanwhile.
func (r *Reader) nextKey(timer <-chan time.Time) (Key, bool, error) {
	r.mu.Lock()
	gone := r.gone
	r.mu.Unlock()
	select {
	case k := <-r.keys:
		return k, true, nil
	case <-timer:
		return 0, false, nil
	case <-gone:
		return 0, false, ErrUnplugged
	}
}

// Control executes a part 10 control code with input in. maxOut is the caller's output buffer.
func (r *Reader) Control(code uint32, in []byte, maxOut int) ([]byte, error) {
	r.controls.Add(1)
	if !r.Plugged() {
		return nil, ErrUnplugged
	}
	var out []byte
	var err error
	switch code {
	case CtlGetFeatureRequest:
		// Reiner's driver refuses a buffer too small for all four features with
		// IFD_COMMUNICATION_ERROR (ifd.cpp p10GetFeatures), not "insufficient buffer".
		if maxOut < 24 {
			return nil, ErrDriver
		}
		out = features()
	case CtlVerifyPINDirect:
		if !r.firmware().PINDirectSupported() {
			return nil, ErrUnsupported // CCIDReader.cpp: STATUS_NOT_SUPPORTED below 3.0.42
		}
		out, err = r.verifyPIN(in)
	case CtlModifyPINDirect:
		if !r.firmware().PINDirectSupported() {
			return nil, ErrUnsupported
		}
		out, err = r.modifyPIN(in)
	case CtlMCTReaderDirect:
		out, err = r.ctbcs(in, maxOut)
	case CtlMCTUniversal:
		out, err = r.mctUniversal(in, maxOut)
	default:
		return nil, ErrUnsupported
	}
	if err != nil {
		return nil, err
	}
	if len(out) > maxOut {
		return nil, ErrOutputTooLong
	}
	return out, nil
}

// features is the reply to CM_IOCTL_GET_FEATURE_REQUEST: tag, length 4, big-endian control code.
func features() []byte {
	var out []byte
	for _, f := range []struct {
		tag  byte
		code uint32
	}{
		{FeatureVerifyPINDirect, CtlVerifyPINDirect},
		{FeatureModifyPINDirect, CtlModifyPINDirect},
		{FeatureMCTReaderDirect, CtlMCTReaderDirect},
		{FeatureMCTUniversal, CtlMCTUniversal},
	} {
		out = append(out, f.tag, 4)
		out = binary.BigEndian.AppendUint32(out, f.code)
	}
	return out
}

// mctUniversal unwraps MCT_UNIVERSAL: src(1) dst(1) length(u16, host order = little-endian)
// then the command; the reply carries the same header with source and destination swapped.
func (r *Reader) mctUniversal(in []byte, maxOut int) ([]byte, error) {
	if len(in) < 4 || int(binary.LittleEndian.Uint16(in[2:4])) != len(in)-4 {
		return nil, ErrBadStructure
	}
	// ifd.cpp p10MctUniversal: room for the header and at least two reply bytes, else
	// IFD_COMMUNICATION_ERROR.
	if maxOut < 6 {
		return nil, ErrDriver
	}
	src, dst, cmd := in[0], in[1], in[4:]
	var resp []byte
	var err error
	switch dst {
	case 1: // the card terminal itself: CT-BCS
		resp, err = r.ctbcs(cmd, maxOut-4)
	case 0: // the card
		resp, err = r.Transmit(cmd)
	default:
		return nil, ErrBadStructure
	}
	if err != nil {
		return nil, err
	}
	out := []byte{dst, src, 0, 0}
	binary.LittleEndian.PutUint16(out[2:], uint16(len(resp)))
	return append(out, resp...), nil
}
