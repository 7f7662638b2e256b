package webconf

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"testing"

	"github.com/keyquorum/keyquorum/cluster"
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
	nb, err := a.srv.cluster.IssueNodeCert("bench", "node-b")
	if err != nil {
		b.Fatal(err)
	}
	peer, node, err := cluster.ParseJoin(cluster.JoinRequest{Peer: a.url(""), NodeP12: nb.P12, NodePassword: nb.Password})
	if err != nil {
		b.Fatal(err)
	}
	peer, _ = url.Parse(peer.String())
	b.ResetTimer()
	for range b.N {
		res, err := bs.srv.cluster.TakeOver(ctx, peer, node)
		if err != nil || res.Keys != 200 {
			b.Fatalf("join: %v %+v", err, res)
		}
	}
}
