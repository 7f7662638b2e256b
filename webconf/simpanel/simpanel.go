package simpanel

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/a-h/templ"
	"github.com/keyquorum/keyquorum/pinpad"
	"github.com/keyquorum/keyquorum/pinpad/sim"
	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/pinpad/vcard"
	"github.com/keyquorum/keyquorum/webconf/operator"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// Simulator is the operator side of the simulator PIN pad; *sim.Pad implements it.
type Simulator interface {
	NewCard() (string, error)
	NewForeignCard() (string, error)
	// NewShapedCard makes a TCOS card of the shape o describes (an unprepared card, one in
	// its transport state), for trying the survey and Prepare cards.
	NewShapedCard(o vcard.Options) (string, error)
	// Profile is the card profile cards are read in (and laid out in by NewCard).
	Profile() *tcos.Profile
	Insert(serial string) error
	Remove() error
	Unplug()
	Plug()
	PressOK()
	PressCancel()
	PressClear()
	TypeDigits(d string) error
	State() sim.State
	Watch(ctx context.Context) <-chan sim.State
	Cards() []sim.CardInfo
}

// View is the simulator panel's picture of the virtual pad and cards.
type View struct {
	Display  string `json:"display"`
	Waiting  string `json:"waiting"`
	WaitText string `json:"waiting_text"`
	Deadline string `json:"deadline"`
	Inserted string `json:"inserted"`
	Plugged  bool   `json:"plugged"`
	Cards    []Card `json:"cards"`
}

// Card is one virtual card of the rack: its serial, its PINs' tries, whether it is in the reader.
type Card struct {
	Serial       string `json:"serial"`
	Foreign      bool   `json:"foreign"`
	ShareTries   int    `json:"share_tries"`
	UserTries    int    `json:"user_tries"`
	ShareBlocked bool   `json:"share_blocked"`
	UserBlocked  bool   `json:"user_blocked"`
	Inserted     bool   `json:"inserted"`
}

// ViewOf is the panel's picture of the simulator now.
func ViewOf(s Simulator) View { return ViewFrom(s.State(), s.Cards()) }

// ViewFrom is the panel's picture of a pad state and its cards.
func ViewFrom(st sim.State, cards []sim.CardInfo) View {
	v := View{Display: st.Display, Waiting: simWait(st.Waiting), Deadline: web.FormatRFC3339(st.Deadline),
		Inserted: st.Inserted, Plugged: st.Plugged, Cards: make([]Card, 0, len(cards))}
	v.WaitText = simWaitingText(v.Waiting)
	if !st.Plugged {
		v.WaitText = "the reader is unplugged"
	}
	for _, c := range cards {
		sc := Card{Serial: c.Serial, Foreign: c.Foreign, ShareTries: -1, UserTries: -1, Inserted: c.Serial == st.Inserted}
		if n, ok := c.Tries[pinpad.SlotShare]; ok {
			sc.ShareTries = n
		}
		if n, ok := c.Tries[pinpad.SlotUser]; ok {
			sc.UserTries = n
		}
		sc.ShareBlocked, sc.UserBlocked = c.Blocked[pinpad.SlotShare], c.Blocked[pinpad.SlotUser]
		v.Cards = append(v.Cards, sc)
	}
	return v
}

func simWait(w sim.Wait) string {
	switch w {
	case sim.WaitOK:
		return "ok"
	case sim.WaitCard:
		return "card"
	case sim.WaitPIN:
		return "pin"
	case sim.WaitRemoval:
		return "removal"
	}
	return ""
}

// Renderer answers with pages and problems; the pages' renderer implements it.
type Renderer interface {
	Problem(w http.ResponseWriter, r *http.Request, p web.Problem)
	HTML(w http.ResponseWriter, r *http.Request, status int, c templ.Component)
}

// Handlers are the simulator panel's actions: the virtual pad's keys and the card rack.
type Handlers struct {
	sim Simulator
	rd  Renderer
	log *slog.Logger
}

// NewHandlers builds the panel's handlers; rd answers with pages and problems.
func NewHandlers(s Simulator, rd Renderer, log *slog.Logger) *Handlers {
	return &Handlers{sim: s, rd: rd, log: log}
}

// Register adds the panel's routes to mux; each has its entry in the server's route table.
func (h *Handlers) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /sim/key", h.key)
	mux.HandleFunc("POST /sim/insert", h.insert)
	mux.HandleFunc("POST /sim/remove", h.remove)
	mux.HandleFunc("POST /sim/cards", h.newCard)
	mux.HandleFunc("GET /sim/rack", h.rack)
}

func (h *Handlers) back(r *http.Request) string {
	return web.LocalPath(r.PostFormValue("back"), "/")
}

func (h *Handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	p := web.Problem{Status: http.StatusConflict, Title: "Simulator action not possible", What: err.Error(), Back: h.back(r),
		Todo: "Look at the simulator panel: the pad's display and the card rack say what it expects now."}
	switch {
	case errors.Is(err, sim.ErrNotPIN):
		p.Todo = "Digits can only be typed while the pad shows “Enter PIN”. Follow the pad's prompt: insert a card and press OK first."
	case errors.Is(err, sim.ErrSlotOccupied):
		p.Todo = "Remove the card in the reader first."
	case errors.Is(err, sim.ErrSlotEmpty):
		p.Todo = "There is no card in the reader to remove."
	case errors.Is(err, sim.ErrUnknownCard):
		p.Status, p.Todo = http.StatusNotFound, "Choose a card from the rack, or make a new one."
	case errors.Is(err, sim.ErrNotDigits):
		p.Status = http.StatusBadRequest
	}
	h.rd.Problem(w, r, p)
}

// key presses one key of the virtual pad: a digit, ok, cancel or clear. The digit is logged
// as "digit", never its value: it is part of a PIN.
func (h *Handlers) key(w http.ResponseWriter, r *http.Request) {
	k := r.PostFormValue("key")
	switch k {
	case "ok":
		h.sim.PressOK()
	case "cancel":
		h.sim.PressCancel()
	case "clear":
		h.sim.PressClear()
	case "unplug":
		h.sim.Unplug()
	case "plug":
		h.sim.Plug()
	case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9":
		if err := h.sim.TypeDigits(k); err != nil {
			h.fail(w, r, err)
			return
		}
		k = "digit"
	default:
		h.fail(w, r, sim.ErrNotDigits)
		return
	}
	h.log.Debug("simulator key", "key", k)
	web.RedirectBack(w, r, h.back(r))
}

func (h *Handlers) insert(w http.ResponseWriter, r *http.Request) {
	if err := h.sim.Insert(r.PostFormValue("serial")); err != nil {
		h.fail(w, r, err)
		return
	}
	web.RedirectBack(w, r, h.back(r))
}

func (h *Handlers) remove(w http.ResponseWriter, r *http.Request) {
	if err := h.sim.Remove(); err != nil {
		h.fail(w, r, err)
		return
	}
	web.RedirectBack(w, r, h.back(r))
}

func (h *Handlers) newCard(w http.ResponseWriter, r *http.Request) {
	var err error
	var serial string
	switch r.PostFormValue("kind") {
	case "foreign":
		serial, err = h.sim.NewForeignCard()
	case "unprepared": // a TCOS card without Keyquorum's files, that lets them be created
		serial, err = h.sim.NewShapedCard(vcard.Options{Creatable: true})
	case "transport": // laid out, its PINs still in their NullPIN (transport) state
		serial, err = h.sim.NewShapedCard(vcard.Options{Profile: h.sim.Profile(), NullPIN: true})
	default:
		serial, err = h.sim.NewCard()
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("simulator card made", "serial", serial)
	web.RedirectBack(w, r, h.back(r))
}

// rack renders the card rack alone, for the script to swap in when the cards change.
func (h *Handlers) rack(w http.ResponseWriter, r *http.Request) {
	op, _ := operator.FromContext(r.Context())
	var v View // the panel's picture only for those who may operate it, as every page's
	if operator.Allowed(op.Role, operator.ActionSimulator) {
		v = ViewOf(h.sim)
	}
	h.rd.HTML(w, r, http.StatusOK, Rack(v, op.CSRF))
}
