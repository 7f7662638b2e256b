package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyquorum/keyquorum/hsm"
)

// KeyIDHeader carries a master backup key ID (hex) beside a backup: a download's, and the state
// a node sends once the joining node proved it holds the key.
const KeyIDHeader = "X-Keyquorum-Key-ID"

// StatePath is where a node serves its state to a joining node (GET, over mutually
// authenticated TLS with a node certificate, with a challenge of ChallengePath in
// ChallengeHeader and the proof of the MBK in ProofHeader).
const StatePath = "/api/v1/cluster/state"

// ChallengePath hands a node certificate a one-time challenge (GET, JSON [Challenge]).
const ChallengePath = "/api/v1/cluster/challenge"

// The headers of a state request: the challenge, and the joining node's proof that it holds
// the MBK (both hex).
const (
	ChallengeHeader = "X-Keyquorum-Challenge"
	ProofHeader     = "X-Keyquorum-Key-Proof"
)

// Challenge is the answer of ChallengePath.
type Challenge struct {
	Challenge string `json:"challenge"` // hex, 32 random bytes
}

// ErrNotNode is a request for the state with a certificate that is not a node certificate of
// this node's management CA.
var ErrNotNode = errors.New("this node sends its state only to a node certificate issued by its own management CA")

// ErrNoProof is a request for the state without a current challenge of this node (unknown,
// used, expired, or of another node certificate) or without a well-formed proof.
var ErrNoProof = errors.New("the joining node must answer a current challenge of this node (" + ChallengePath + ") with its proof of the master backup key")

// ErrKeyNotProven is a joining node whose proof does not verify under this node's MBK: it does
// not hold the cluster's master backup key. The refusal names no key ID.
var ErrKeyNotProven = errors.New("the joining node did not prove that it holds this cluster's master backup key")

// ErrCannotProve is an HSM that cannot vouch for data with a key derived from its MBK (it does
// not implement hsm.Authenticator): it can neither prove the key nor check a proof.
var ErrCannotProve = errors.New("this node's HSM cannot prove or check a master backup key (no authenticator)")

// challengeTTL is how long a challenge waits for its state request; maxChallenges bounds those
// waiting, maxChallengesPerNode those of one node certificate (a further one replaces its
// oldest).
const (
	challengeTTL         = 2 * time.Minute
	maxChallenges        = 64
	maxChallengesPerNode = 4
)

type challenge struct {
	node    [32]byte // SHA-256 of the node certificate it was handed to
	expires time.Time
}

// proofMessage is what a joining node authenticates with its HSM (hsm.Authenticator, a key
// derived from the MBK): the challenge and its node certificate, under a label of its own so a
// proof is nothing else's authenticator (a share record is not this long and has no such
// prefix).
func proofMessage(ch []byte, leaf *x509.Certificate) []byte {
	sum := sha256.Sum256(leaf.Raw)
	msg := append([]byte("keyquorum cluster state proof v1\x00"), ch...)
	return append(msg, sum[:]...)
}

// Challenge hands a node certificate of this node's CA a one-time challenge for its state
// request.
func (n *Node) Challenge(leaf *x509.Certificate, now time.Time) (Challenge, error) {
	if !IsNodeCert(leaf, n.CA) {
		return Challenge{}, ErrNotNode
	}
	ch := make([]byte, 32)
	if _, err := rand.Read(ch); err != nil {
		return Challenge{}, err
	}
	node := sha256.Sum256(leaf.Raw)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.challenges == nil {
		n.challenges = map[string]challenge{}
	}
	oldest, mine := "", 0
	for k, c := range n.challenges {
		if now.After(c.expires) {
			delete(n.challenges, k)
			continue
		}
		if c.node == node {
			mine++
			if oldest == "" || c.expires.Before(n.challenges[oldest].expires) {
				oldest = k
			}
		}
	}
	if mine >= maxChallengesPerNode {
		delete(n.challenges, oldest)
	} else if len(n.challenges) >= maxChallenges {
		return Challenge{}, errors.New("too many cluster joins are under way: try again in two minutes")
	}
	key := hex.EncodeToString(ch)
	n.challenges[key] = challenge{node: node, expires: now.Add(challengeTTL)}
	return Challenge{Challenge: key}, nil
}

// takeChallenge uses up a challenge handed to leaf.
func (n *Node) takeChallenge(key string, leaf *x509.Certificate, now time.Time) ([]byte, bool) {
	key = strings.ToLower(strings.TrimSpace(key))
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.challenges[key]
	if !ok {
		return nil, false
	}
	delete(n.challenges, key)
	ch, err := hex.DecodeString(key)
	if err != nil || now.After(c.expires) || c.node != sha256.Sum256(leaf.Raw) {
		return nil, false
	}
	return ch, true
}

// Prove answers a challenge of a peer for the node certificate leaf with h's key derived from
// the MBK.
func Prove(ctx context.Context, h HSM, ch Challenge, leaf *x509.Certificate) (string, error) {
	auth, ok := h.(hsm.Authenticator)
	if !ok {
		return "", ErrCannotProve
	}
	raw, err := hex.DecodeString(ch.Challenge)
	if err != nil || len(raw) != 32 {
		return "", errors.New("the peer's challenge is not 32 bytes of hex")
	}
	tag, err := auth.Authenticate(ctx, proofMessage(raw, leaf))
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(tag), nil
}

// IsNodeCert reports whether a verified client certificate is a node certificate of the
// management CA ca. The signature is checked last: WebConf asks this of every request, and an
// operator's certificate is told apart by its organization without an ECDSA verification (a
// third of the server's CPU per status page under load).
func IsNodeCert(leaf *x509.Certificate, ca *x509.Certificate) bool {
	return slices.Equal(leaf.Subject.Organization, []string{NodeOrganization}) &&
		bytes.Equal(leaf.RawIssuer, ca.RawSubject) && leaf.CheckSignatureFrom(ca) == nil
}

func parseKeyID(s string) (hsm.KeyID, bool) {
	var id hsm.KeyID
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// CheckJoiner decides whether a joining node gets this node's state: node is the name of its
// certificate leaf (for the log and the audit log); challenge and proof are its answer to a
// challenge of this node (ChallengeHeader, ProofHeader). It returns the key ID of this node's
// MBK, or ErrNotNode, an error of the HSM (no MBK loaded), ErrNoProof, ErrCannotProve, or
// ErrKeyNotProven (audited). No refusal tells the joining node a key ID.
func (n *Node) CheckJoiner(ctx context.Context, node string, leaf *x509.Certificate, challenge, proof string) (hsm.KeyID, error) {
	if !IsNodeCert(leaf, n.CA) {
		n.log().Warn("cluster state refused to a certificate that is not a node certificate", "operator", node)
		return hsm.KeyID{}, ErrNotNode
	}
	mine, err := n.HSM.BackupKeyID(ctx)
	if err != nil {
		return hsm.KeyID{}, err
	}
	auth, ok := n.HSM.(hsm.Authenticator)
	if !ok {
		return hsm.KeyID{}, ErrCannotProve
	}
	ch, ok := n.takeChallenge(challenge, leaf, time.Now())
	tag, err := hex.DecodeString(strings.TrimSpace(proof))
	if !ok || err != nil || len(tag) != hsm.AuthenticatorSize {
		return hsm.KeyID{}, ErrNoProof
	}
	if err := auth.CheckAuthenticator(ctx, proofMessage(ch, leaf), tag); err != nil {
		if !errors.Is(err, hsm.ErrAuthenticatorMismatch) {
			return hsm.KeyID{}, err
		}
		n.log().Warn("cluster state refused: the node did not prove the master backup key", "node", node)
		n.Audit.Record(node, AuditClusterStateRefused, fmt.Sprintf("state refused to node %s: it did not prove that it holds the master backup key %s", node, mine))
		return hsm.KeyID{}, ErrKeyNotProven
	}
	return mine, nil
}
