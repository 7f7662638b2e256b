package web

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keyquorum/keyquorum/sharing"
)

// Quorum is the wizard's form: a preset or a custom k-of-n, and the label on the cards.
type Quorum struct {
	Preset string // "2-3", "3-5" or "custom"
	K, N   int
	Label  string
}

// ParseQuorum reads the wizard's choice from a form or query.
func ParseQuorum(get func(string) string) (Quorum, error) {
	c := Quorum{Preset: get("quorum"), Label: strings.TrimSpace(get("label"))}
	switch c.Preset {
	case "2-3":
		c.K, c.N = 2, 3
	case "3-5":
		c.K, c.N = 3, 5
	case "custom":
		var err1, err2 error
		c.K, err1 = strconv.Atoi(strings.TrimSpace(get("k")))
		c.N, err2 = strconv.Atoi(strings.TrimSpace(get("n")))
		if err1 != nil || err2 != nil {
			return c, fmt.Errorf("a custom quorum needs two whole numbers: k cards needed out of n cards written")
		}
	default:
		return c, fmt.Errorf("choose 2 of 3, 3 of 5 or a custom quorum")
	}
	if err := sharing.ValidateQuorum(c.K, c.N); err != nil {
		return c, fmt.Errorf("%d of %d is not a possible quorum: %v (at least 2 cards needed, at most 255 written, and no more needed than written)", c.K, c.N, err)
	}
	if err := ValidLabel(c.Label); err != nil {
		return c, err
	}
	return c, nil
}

// ValidLabel checks a key set's label: at most sharing.MaxLabelSize bytes of text without
// control characters.
func ValidLabel(l string) error {
	if len(l) > sharing.MaxLabelSize || !utf8.ValidString(l) {
		return fmt.Errorf("the label may have at most %d characters", sharing.MaxLabelSize)
	}
	for _, c := range l {
		if unicode.IsControl(c) {
			return fmt.Errorf("the label may not contain control characters")
		}
	}
	return nil
}

// ResetPhrase is what an operator types to confirm a factory reset.
const ResetPhrase = "FACTORY RESET"
