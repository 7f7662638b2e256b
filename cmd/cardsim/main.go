// Command cardsim serves virtual TCOS cards to the real PC/SC stack through vsmartcard's vpcd
// driver (Debian packages pcscd and vsmartcard-vpcd): with it, pcsc_scan, OpenSC tools and
// Keyquorum's pcsc backend see a TCOS card in the "Virtual PCD" reader, and no hardware is
// needed to try them.
//
//	cardsim [-dir DIR] [-addr 127.0.0.1:35963] [-insert SERIAL]
//
// The cards are the simulator's cards (pinpad/vcard files, DIR/<serial>.card), so a card
// written here can be inspected in the simulator and the other way round — but not by both at
// once: one process owns a card file at a time. Commands are read from standard input, one a
// line:
//
//	new [SHAPE...]    make a TCOS card (PINs 123456) and print its serial; SHAPE words
//	                  (pinpad/vcard.Options) make the card shapes real cards may have:
//	                  profile=NAME (keyquorum-mf, netkey-df01), blank (unpersonalised),
//	                  creatable (CREATE FILE allowed), nullpin (PINs in transport state),
//	                  query=spends|6700|6a88 (the data-less VERIFY), atr=9f (3B 9F ATR),
//	                  nopwdd (no EF_PWDD), pinfiles (TCOS 2 style PIN files)
//	foreign           make a card that is not TCOS
//	list              list the cards with their PIN tries
//	insert SERIAL     insert a card (connect to vpcd)
//	remove            remove it (close the connection)
//	quit              remove the card and exit
//
// Virtual cards are for demos and tests: their files hold PINs and slot data as a chip would.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/pinpad/vpcd"
)

func main() {
	dir := flag.String("dir", "keyquorum-data/sim-cards", "directory of the virtual card files")
	addr := flag.String("addr", vpcd.DefaultAddr, "vpcd address (its slot 0 is port 35963)")
	insert := flag.String("insert", "", "serial of a card to insert at start")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *addr, *insert, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "cardsim: %v\n", err)
		os.Exit(1)
	}
}

type sim struct {
	dir  string
	slot *vpcd.Slot
	out  io.Writer
}

func run(ctx context.Context, dir, addr, insert string, in io.Reader, out io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	s := &sim{dir: dir, slot: vpcd.NewSlot(addr), out: out}
	defer func() {
		if s.slot.Inserted() {
			s.slot.Remove()
		}
	}()
	if insert != "" {
		if err := s.command(ctx, []string{"insert", insert}); err != nil {
			return err
		}
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok {
				if s.slot.Inserted() { // stdin closed (e.g. run in the background): keep serving
					<-ctx.Done()
				}
				return nil
			}
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if f[0] == "quit" {
				return nil
			}
			if err := s.command(ctx, f); err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
			}
		}
	}
}

func (s *sim) command(ctx context.Context, f []string) error {
	switch f[0] {
	case "new", "foreign":
		sn := make([]byte, 8)
		if _, err := rand.Read(sn); err != nil {
			return err
		}
		path := filepath.Join(s.dir, strings.ToUpper(hex.EncodeToString(sn))+".card")
		var c *vcard.Card
		var err error
		if f[0] == "new" {
			o, perr := shapeOf(f[1:])
			if perr != nil {
				return perr
			}
			o.Serial = sn
			c, err = vcard.NewWith(path, o)
		} else {
			c, err = vcard.NewForeign(path, sn)
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(s.out, c.Serial())
		return nil
	case "list":
		paths, _ := filepath.Glob(filepath.Join(s.dir, "*.card"))
		sort.Strings(paths)
		for _, p := range paths {
			c, err := vcard.Load(p)
			if err != nil {
				fmt.Fprintf(s.out, "%s: %v\n", filepath.Base(p), err)
				continue
			}
			if c.Foreign() {
				fmt.Fprintf(s.out, "%s foreign\n", c.Serial())
				continue
			}
			fmt.Fprintf(s.out, "%s tcos", c.Serial())
			for _, pin := range c.PINs() {
				state := fmt.Sprintf("%d", pin.Tries)
				if pin.Null {
					state = "nullpin"
				}
				fmt.Fprintf(s.out, " pin-%s:%02X-tries=%s", pin.DF, pin.Ref, state)
			}
			fmt.Fprintln(s.out)
		}
		return nil
	case "insert":
		if len(f) != 2 {
			return errors.New("usage: insert SERIAL")
		}
		c, err := vcard.Load(filepath.Join(s.dir, strings.ToUpper(f[1])+".card"))
		if err != nil {
			return err
		}
		if err := s.slot.Insert(ctx, c); err != nil {
			return err
		}
		fmt.Fprintf(s.out, "inserted %s\n", c.Serial())
		return nil
	case "remove":
		if err := s.slot.Remove(); err != nil {
			return err
		}
		fmt.Fprintln(s.out, "removed")
		return nil
	}
	return fmt.Errorf("unknown command %q (new, foreign, list, insert SERIAL, remove, quit)", f[0])
}

// shapeOf reads the SHAPE words of "new".
func shapeOf(words []string) (vcard.Options, error) {
	o := vcard.Options{Profile: tcos.KeyquorumMF()}
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "profile":
			p, ok := tcos.LookupProfile(v)
			if !ok {
				return o, fmt.Errorf("no shipped profile %q", v)
			}
			o.Profile = p
		case "blank":
			o.Profile = nil
		case "creatable":
			o.Creatable = true
		case "nullpin":
			o.NullPIN = true
		case "nopwdd":
			o.NoPWDD = true
		case "pinfiles":
			o.PINFiles = true
		case "query":
			switch q := vcard.VerifyQuery(strings.ToLower(v)); q {
			case vcard.QuerySpends, vcard.QueryWrongLength, vcard.QueryRefNotFound:
				o.VerifyQuery = q
			default:
				return o, fmt.Errorf("query=%s: want spends, 6700 or 6a88", v)
			}
		case "atr":
			if !strings.EqualFold(v, "9f") {
				return o, fmt.Errorf("atr=%s: only 9f (the 3B 9F form)", v)
			}
			o.ATR = tcos.ATRNoTB1
		default:
			return o, fmt.Errorf("unknown shape %q", w)
		}
	}
	return o, nil
}
