package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMetrics runs keyquorum serve with --metrics-listen, takes a 2-of-3 generation through the
// CLI and reads the exposition before and after: the ceremony counters and the key gauge move,
// and no card serial, no operator name and no key ID appears in it.
func TestMetrics(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	n, err := startNode("a", dir, "--metrics-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("--- log:\n%s", n.log)
		}
	})
	m := regexp.MustCompile(`Metrics: +(http://\S+/metrics)`).FindStringSubmatch(n.log.String())
	if m == nil {
		t.Fatalf("serve did not print the metrics address:\n%s", n.log)
	}
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("metrics: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	before := scrape()
	for _, want := range []string{
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 0`,
		"keyquorum_key_loaded 0", "keyquorum_hsm_reachable 1", "keyquorum_pinpad_present 1",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(before, want) {
			t.Errorf("before: the exposition lacks %q", want)
		}
	}
	if err := n.registerKey(); err != nil {
		t.Fatal(err)
	}
	cards, err := n.newCards(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustCeremony(t, ctx, n, []string{cards[0], cards[1], cards[2], cards[0], cards[1]}, "generate", "-k", "2", "-n", "3")
	st := mustStatus(t, n)

	after := scrape()
	for _, want := range []string{
		`keyquorum_ceremonies_started_total{kind="generate"} 1`,
		`keyquorum_ceremonies_ended_total{kind="generate",outcome="done"} 1`,
		"keyquorum_key_loaded 1",
	} {
		if !strings.Contains(after, want) {
			t.Errorf("after a generation: the exposition lacks %q", want)
		}
	}
	for _, secretish := range append(cards, st.BackupKeyID, "administrator", "Keyquorum administrator") {
		if secretish != "" && strings.Contains(after, secretish) {
			t.Errorf("the exposition holds %q", secretish)
		}
	}
	// /healthz is served beside the metrics, without a certificate.
	resp, err := http.Get(strings.TrimSuffix(m[1], "/metrics") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "up\n" {
		t.Errorf("healthz on the metrics listener: %d %q", resp.StatusCode, b)
	}
}
