package pcsc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/keyquorum/keyquorum/internal/pcscdtest"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/part10"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/pinpad/vpcd"
)

// The integration tests run the real stack: ebfe/scard → libpcsclite → a pcscd of this test
// binary → vpcd → a virtual TCOS card served in-process by pinpad/vpcd.
var stack struct {
	err    error  // why the stack could not start
	skip   bool   // may skip on err: outside CI and a component truly absent
	addr   string // vpcd's slot 0
	reader string // the reader's name prefix
	stop   func()
}

const vpcdDriver = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"

func TestMain(m *testing.M) {
	startStack()
	code := m.Run()
	if stack.stop != nil {
		stack.stop()
	}
	os.Exit(code)
}

// freePort finds a TCP port vpcd can listen on, so a system pcscd with vpcd on 35963 and
// this test do not meet.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startStack() {
	if _, err := os.Stat(vpcdDriver); err != nil {
		stack.err, stack.skip = fmt.Errorf("vpcd not installed (%s): run scripts/deps", vpcdDriver), os.Getenv("CI") != "true"
		return
	}
	port, err := freePort()
	if err != nil {
		stack.err = err
		return
	}
	reader := pcscdtest.Reader{
		FriendlyName: "Virtual PCD",
		DeviceName:   fmt.Sprintf("/dev/null:0x%04X", port),
		LibPath:      vpcdDriver,
		ChannelID:    fmt.Sprintf("0x%04X", port), // vpcd listens on CHANNELID (+ slot)
	}
	stack.addr = fmt.Sprintf("127.0.0.1:%d", port)
	stack.reader = "Virtual PCD"
	d, err := pcscdtest.Start(reader)
	if err == nil {
		stack.stop = d.Stop
		return
	}
	if errors.Is(err, pcscdtest.ErrUnavailable) {
		stack.err, stack.skip = err, pcscdtest.Require(err)
		return
	}
	// A private mount namespace can fail in a container even as root: fall back to a pcscd of
	// our own on the default socket, if no other pcscd holds it.
	stop, ferr := startDefaultPcscd(reader)
	if ferr != nil {
		stack.err = fmt.Errorf("private pcscd: %v; pcscd on the default socket: %w", err, ferr)
		return
	}
	stack.stop = stop
}

func startDefaultPcscd(r pcscdtest.Reader) (func(), error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root")
	}
	const sock = "/run/pcscd/pcscd.comm"
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		return nil, errors.New("another pcscd already serves " + sock)
	}
	dir, err := os.MkdirTemp("", "pcscd-default-")
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("FRIENDLYNAME %q\nDEVICENAME %s\nLIBPATH %s\nCHANNELID %s\n", r.FriendlyName, r.DeviceName, r.LibPath, r.ChannelID)
	if err := os.WriteFile(filepath.Join(dir, "vpcd"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	os.MkdirAll("/run/pcscd", 0o755)
	pcscd, err := exec.LookPath("pcscd")
	if err != nil {
		pcscd = "/usr/sbin/pcscd"
	}
	cmd := exec.Command(pcscd, "-f", "-c", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	for range 100 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, errors.New("pcscd did not come up")
}

// requireStack skips a test only when a component is truly absent outside CI.
func requireStack(t testing.TB) {
	t.Helper()
	if stack.err == nil {
		return
	}
	if stack.skip {
		t.Skipf("PC/SC stack unavailable: %v", stack.err)
	}
	t.Fatalf("PC/SC stack unavailable: %v", stack.err)
}

// testPIN is the PIN the host-side pad of these tests types. Tests set it before a verify.
type testPIN struct {
	mu  sync.Mutex
	pin []byte
}

func (p *testPIN) set(pin string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pin = []byte(pin)
}

// hostPad is the TEST-ONLY stand-in for a PIN pad: vpcd has no part 10, so it completes the
// PIN structure on the host, as a pad would, and sends the plain VERIFY through PC/SC. It
// lives in this _test.go file and is installed through the unexported Terminal.newPad, so no
// production code can reach it; production always uses the reader's part 10 pad.
type hostPad struct {
	tr  transport
	pin *testPIN
}

func (p *hostPad) complete(ctx context.Context, fill func(pin []byte) ([]byte, error)) ([]byte, error) {
	p.pin.mu.Lock()
	apdu, err := fill(p.pin.pin)
	p.pin.mu.Unlock()
	if err != nil {
		return []byte{0x64, 0x03}, nil // what a pad answers to a PIN of the wrong length
	}
	resp, err := p.tr.Transmit(ctx, apdu)
	clear(apdu)
	if err != nil {
		return nil, err
	}
	return resp[len(resp)-2:], nil
}

func (p *hostPad) VerifyPIN(ctx context.Context, v *part10.PINVerify) ([]byte, error) {
	return p.complete(ctx, v.Fill)
}

func (p *hostPad) ModifyPIN(ctx context.Context, m *part10.PINModify) ([]byte, error) {
	return p.complete(ctx, func(pin []byte) ([]byte, error) { return m.Fill(nil, pin) })
}

func openTerminal(t *testing.T, ctx context.Context, pin *testPIN) *Terminal {
	t.Helper()
	term, err := Open(ctx, Options{Reader: stack.reader, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("open terminal: %v", err)
	}
	if pin != nil {
		term.newPad = func(h handle, _ part10.Features, _ *slog.Logger) tcos.PINPad {
			return &hostPad{tr: transport{h: h}, pin: pin}
		}
	}
	t.Cleanup(func() { term.Close() })
	return term
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// insertAfter inserts card into vpcd's slot after a short delay, while the test waits for it.
func insertAfter(t *testing.T, ctx context.Context, slot *vpcd.Slot, card vpcd.Card) <-chan error {
	done := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		done <- slot.Insert(ctx, card)
	}()
	return done
}

// removeAndWait removes the card and waits until pcscd has seen it go.
func removeAndWait(t *testing.T, ctx context.Context, term *Terminal, slot *vpcd.Slot) {
	t.Helper()
	if err := slot.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := term.WaitForRemoval(ctx, "Remove the card", 10*time.Second); err != nil {
		t.Fatalf("wait for removal: %v", err)
	}
}

func TestPCSCShareCardLifecycle(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pin := &testPIN{}
	term := openTerminal(t, ctx, pin)
	if !strings.HasPrefix(term.Name(), stack.reader) {
		t.Fatalf("reader %q", term.Name())
	}
	f, err := term.Features(ctx)
	if err != nil || len(f) != 0 {
		t.Fatalf("vpcd features: %v, %v; want none", f, err)
	}
	if err := term.Show(ctx, "Insert 1. card"); !errors.Is(err, pinpad.ErrNoDisplay) {
		t.Errorf("show on vpcd: %v, want ErrNoDisplay", err)
	}

	vc, err := vcard.New(filepath.Join(t.TempDir(), "card"), nil)
	if err != nil {
		t.Fatal(err)
	}
	slot := vpcd.NewSlot(stack.addr)
	inserted := insertAfter(t, ctx, slot, vc)
	card, err := term.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatalf("wait for card: %v", err)
	}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	if card.Serial() != vc.Serial() || !tcos.IsTCOS(card.ATR()) {
		t.Fatalf("card %s ATR %x, want serial %s", card.Serial(), card.ATR(), vc.Serial())
	}

	// A share record is opaque bytes here; 300 of them take two UPDATE BINARY chunks.
	record := make([]byte, 300)
	rand.Read(record)
	if err := card.Write(ctx, pinpad.SlotShare, record); !errors.Is(err, pinpad.ErrAccessDenied) {
		t.Fatalf("write without PIN: %v, want ErrAccessDenied", err)
	}
	pin.set("123456")
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 30*time.Second); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := card.Write(ctx, pinpad.SlotShare, record); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := card.Read(ctx, pinpad.SlotShare)
	if err != nil || !bytes.Equal(got, record) {
		t.Fatalf("read back: %x, %v", got, err)
	}

	// Wrong PINs count down to blocked; the right one no longer helps.
	pin.set("000000")
	for _, want := range []int{2, 1} {
		var wp *pinpad.WrongPINError
		if err := card.VerifyPIN(ctx, pinpad.SlotShare, 30*time.Second); !errors.As(err, &wp) || wp.Remaining != want {
			t.Fatalf("wrong PIN: %v, want %d tries left", err, want)
		}
		if n, err := card.PINTries(ctx, pinpad.SlotShare); n != want || err != nil {
			t.Fatalf("tries: %d, %v; want %d", n, err, want)
		}
	}
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 30*time.Second); !errors.Is(err, pinpad.ErrPINBlocked) {
		t.Fatalf("third wrong PIN: %v, want ErrPINBlocked", err)
	}
	pin.set("123456")
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 30*time.Second); !errors.Is(err, pinpad.ErrPINBlocked) {
		t.Fatalf("right PIN on a blocked card: %v, want ErrPINBlocked", err)
	}
	if n, err := card.PINTries(ctx, pinpad.SlotShare); n != 0 || err != nil {
		t.Fatalf("tries of a blocked PIN: %d, %v", n, err)
	}
	if err := card.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	removeAndWait(t, ctx, term, slot)
	if tries, _ := vc.Tries(tcos.PINRefShare); tries != 0 {
		t.Errorf("the card file says %d tries", tries)
	}
}

func TestPCSCReaderWithoutPINPadRefusesPINEntry(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term := openTerminal(t, ctx, nil) // production pad: part 10 from the feature list
	vc, err := vcard.New("", nil)
	if err != nil {
		t.Fatal(err)
	}
	slot := vpcd.NewSlot(stack.addr)
	insertAfter(t, ctx, slot, vc)
	card, err := term.WaitForCard(ctx, "Insert 1. card press OK/Cancel", 10*time.Second)
	if err != nil {
		t.Fatalf("wait for card: %v", err)
	}
	if err := card.VerifyPIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrNoPINPad) {
		t.Errorf("verify on a reader without pad: %v, want ErrNoPINPad", err)
	}
	if err := card.ChangePIN(ctx, pinpad.SlotShare, 5*time.Second); !errors.Is(err, pinpad.ErrNoPINPad) {
		t.Errorf("change on a reader without pad: %v, want ErrNoPINPad", err)
	}
	if n, _ := vc.Tries(tcos.PINRefShare); n != tcos.MaxTries {
		t.Errorf("tries spent: %d left", n)
	}

	// Removal in the middle of a session: the next APDU reports it.
	if err := slot.Remove(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := card.PINTries(ctx, pinpad.SlotShare)
		if errors.Is(err, pinpad.ErrCardRemoved) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after removal: %v, want ErrCardRemoved", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	card.Close()
	if err := term.WaitForRemoval(ctx, "Remove the card", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPCSCForeignCardAndWaits(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term := openTerminal(t, ctx, nil)

	if _, err := term.WaitForCard(ctx, "Insert 1. card", 300*time.Millisecond); !errors.Is(err, pinpad.ErrTimeout) {
		t.Fatalf("wait with no card: %v, want ErrTimeout", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(200*time.Millisecond, ccancel)
	start := time.Now()
	if _, err := term.WaitForCard(cctx, "Insert 1. card", 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v, want context.Canceled", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("the cancelled wait took %v", time.Since(start))
	}
	if err := term.WaitForOK(ctx, "Write New Key press OK/Cancel", time.Second); !errors.Is(err, pinpad.ErrNoOKKey) {
		t.Errorf("wait for OK: %v, want ErrNoOKKey", err)
	}

	fc, err := vcard.NewForeign("", nil)
	if err != nil {
		t.Fatal(err)
	}
	slot := vpcd.NewSlot(stack.addr)
	insertAfter(t, ctx, slot, fc)
	if _, err := term.WaitForCard(ctx, "Insert 1. card", 10*time.Second); !errors.Is(err, pinpad.ErrNotTCOS) {
		t.Fatalf("foreign card: %v, want ErrNotTCOS", err)
	}
	removeAndWait(t, ctx, term, slot)
}

func TestPCSCDiagnose(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vc, err := vcard.New("", nil)
	if err != nil {
		t.Fatal(err)
	}
	slot := vpcd.NewSlot(stack.addr)
	term := openTerminal(t, ctx, nil)
	insertAfter(t, ctx, slot, vc)
	card, err := term.WaitForCard(ctx, "x", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	card.Close()
	var out bytes.Buffer
	if err := Diagnose(ctx, &out, DiagnoseOptions{Reader: stack.reader, VerifyPIN: true}); err != nil {
		t.Fatalf("diagnose: %v\n%s", err, out.String())
	}
	report := out.String()
	t.Log(report)
	for _, want := range []string{
		"Virtual PCD 00 00",
		"> control 0x42000D48 \n", // the feature request, no input
		"no part 10 features",
		"cannot be used for PIN entry",
		"ATR: 3bbf96008131fe5d0064041103013" + "1c073f701d000900" + "07d (TCOS 3: true)",
		"> apdu    00a4000c",
		"serial: " + vc.Serial(),
		"> apdu    00a4080c025049", // PIN tries: EF_PWDD of the MF, record 1 names PIN 81
		"< apdu    a007830181900203039000",
		"tries left: 3",
		"verify: " + pinpad.ErrNoPINPad.Error(),
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, "> apdu    00200081\n") {
		t.Error("the diagnosis sent a VERIFY without data, which the default profile does not declare safe")
	}
	removeAndWait(t, ctx, term, slot)
}

// BenchmarkPCSCAPDURoundTrip measures one APDU (SELECT MF) through ebfe/scard, pcscd, vpcd and
// the virtual card, and reports the median and 99th percentile.
func BenchmarkPCSCAPDURoundTrip(b *testing.B) {
	requireStack(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vc, err := vcard.New("", nil)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := scard.EstablishContext()
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Release()
	readers, err := sc.ListReaders()
	if err != nil || len(readers) == 0 {
		b.Fatalf("readers: %v %v", readers, err)
	}
	// A previous run (-count > 1) took its card out a moment ago: insert only once pcscd has
	// seen the slot empty, or it never notices the card changed.
	rs := []scard.ReaderState{{Reader: readers[0], CurrentState: scard.StateUnaware}}
	for rs[0].EventState&scard.StateEmpty == 0 {
		if err := sc.GetStatusChange(rs, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		rs[0].CurrentState = rs[0].EventState
	}
	slot := vpcd.NewSlot(stack.addr)
	if err := slot.Insert(ctx, vc); err != nil {
		b.Fatal(err)
	}
	defer slot.Remove()
	for rs[0].EventState&scard.StatePresent == 0 {
		if err := sc.GetStatusChange(rs, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		rs[0].CurrentState = rs[0].EventState
	}
	h, err := sc.Connect(readers[0], scard.ShareExclusive, scard.ProtocolAny)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Disconnect(scard.ResetCard)
	apdu := []byte{0x00, 0xA4, 0x00, 0x0C}
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		resp, err := h.Transmit(apdu)
		times = append(times, time.Since(start))
		if err != nil || !bytes.Equal(resp, []byte{0x90, 0x00}) {
			b.Fatalf("select MF: %x %v", resp, err)
		}
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds()), "p99-µs")
}

// TestPCSCNoMatchingReader: pcscd lists readers, none of them the PIN pad: the terminal opens
// anyway (a service starts before the reader is plugged in) and every operation says that no
// PIN pad is connected, which the ceremony turns into a stall until Retry.
func TestPCSCNoMatchingReader(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	term, err := Open(ctx, Options{Reader: "REINER SCT cyberJack"})
	if err != nil {
		t.Fatalf("open with no such reader: %v", err)
	}
	defer term.Close()
	if term.Name() != "REINER SCT cyberJack" {
		t.Fatalf("name %q", term.Name())
	}
	for name, err := range map[string]error{
		"status":      func() error { _, err := term.Status(ctx); return err }(),
		"wait for OK": term.WaitForOK(ctx, "Write New Key press OK/Cancel", time.Second),
		"wait for card": func() error {
			_, err := term.WaitForCard(ctx, "Insert 1. card press OK/Cancel", time.Second)
			return err
		}(),
		"removal": term.WaitForRemoval(ctx, "Remove card", time.Second),
		"show":    term.Show(ctx, "hello"),
	} {
		if !errors.Is(err, pinpad.ErrNoReader) || err.Error() != "no PIN pad connected" {
			t.Errorf("%s: %v, want %q", name, err, pinpad.ErrNoReader)
		}
	}
}
