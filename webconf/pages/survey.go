package pages

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/keyquorum/keyquorum/pinpad/tcos"
	"github.com/keyquorum/keyquorum/webconf/web"
)

// surveyHandlers answer the Smart cards page's "Survey the card in the reader".
type surveyHandlers struct {
	surveyor web.CardSurveyor
	records  web.CeremonyRecords
	rd       *Renderer
	log      *slog.Logger
}

// surveyView is the survey page: the report in words and as JSON, both safe to mail to support.
type surveyView struct {
	Report *tcos.SurveyReport
	Text   string
	JSON   string
}

func (h *surveyHandlers) survey(w http.ResponseWriter, r *http.Request) {
	rep, p := web.SurveyCard(r.Context(), h.surveyor, h.records, "/cards")
	if p != nil {
		h.rd.Problem(w, r, *p)
		return
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		h.rd.Problem(w, r, web.For(err, "/cards"))
		return
	}
	h.log.Info("card surveyed", "serial", rep.Serial, "fits", rep.Fits)
	h.rd.HTML(w, r, http.StatusOK, surveyPage(h.rd.Page(r, "Card survey", "cards"), surveyView{Report: rep, Text: text.String(), JSON: string(js)}))
}
