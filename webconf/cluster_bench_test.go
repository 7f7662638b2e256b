package webconf

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"testing"
)

// BenchmarkClusterJoin measures one whole join between two services on loopback: mutually
// authenticated TLS with the node certificate, A's key database of 200 keys as a backup under
// the MBK, B's header check and restore.
func BenchmarkClusterJoin(b *testing.B) {
	ctx := context.Background()
	a := startService(b, b.TempDir(), serviceOptions{})
	bs := startService(b, b.TempDir(), serviceOptions{})
	mbk := make([]byte, 32)
	rand.Read(mbk)
	for _, s := range []*service{a, bs} {
		if err := s.hsm.LoadBackupKey(ctx, mbk); err != nil {
			b.Fatal(err)
		}
	}
	clear(mbk)
	for i := range 200 {
		if _, err := a.hsm.CreateKey(ctx, fmt.Sprintf("key-%03d", i)); err != nil {
			b.Fatal(err)
		}
	}
	ha := &apiHandlers{s: a.srv, cfg: a.srv.cfg, rd: a.srv.rd, log: a.srv.log}
	nb, err := ha.issueNodeCert("bench", "node-b")
	if err != nil {
		b.Fatal(err)
	}
	peer, node, err := parseJoin(JoinRequest{Peer: a.url(""), NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil {
		b.Fatal(err)
	}
	peer, _ = url.Parse(peer.String())
	hb := &apiHandlers{s: bs.srv, cfg: bs.srv.cfg, rd: bs.srv.rd, log: bs.srv.log}
	b.ResetTimer()
	for range b.N {
		res, err := hb.join(ctx, peer, node)
		if err != nil || res.Keys != 200 {
			b.Fatalf("join: %v %+v", err, res)
		}
	}
}
