package cluster

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/keyquorum/keyquorum/hsm"
)

// The node file a join was made with (the node certificate's private key and the file's
// password) is kept in StateFile so that the node can pull from its peer again. It is kept
// sealed: AES-256-GCM under a key the HSM derives from the MBK (its authenticator of
// nodeFileLabel), so the data directory alone does not give the node certificate's key away,
// and a node whose MBK changed (a factory reset, another set's key) must join again. The seal
// binds the peer's address, so a sealed file cannot be moved to another peer's entry.

// nodeFileLabel is the message whose authenticator is the sealing key; the label is the
// authenticator's use (hsm.Authenticator), unlike any share record, audit or proof message.
const nodeFileLabel = "keyquorum cluster node file seal v1\x00"

// ErrNodeFileSealed means the kept node file cannot be opened: no MBK is loaded, or another
// one than the file was sealed under (join the peer again).
var ErrNodeFileSealed = errors.New("the node file kept for this peer is sealed under the master backup key, and the HSM holds no key or another one")

// sealedFile is what is sealed.
type sealedFile struct {
	P12      []byte `json:"p12"`
	Password string `json:"password"`
}

// nodeFileAEAD makes the sealing cipher from the HSM's authenticator of the label.
func (n *Node) nodeFileAEAD(ctx context.Context) (cipher.AEAD, error) {
	auth, ok := n.HSM.(hsm.Authenticator)
	if !ok {
		return nil, fmt.Errorf("keep the node file: this HSM cannot derive keys from the master backup key")
	}
	key, err := auth.Authenticate(ctx, []byte(nodeFileLabel))
	if err != nil {
		if errors.Is(err, hsm.ErrNoBackupKey) {
			return nil, ErrNodeFileSealed
		}
		return nil, fmt.Errorf("keep the node file: %w", err)
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealNodeFile seals a node file and its password for the peer at address.
func (n *Node) sealNodeFile(ctx context.Context, address string, p12 []byte, password string) ([]byte, error) {
	aead, err := n.nodeFileAEAD(ctx)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(sealedFile{P12: p12, Password: password})
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, []byte(address)), nil
}

// openNodeFile opens what sealNodeFile sealed for address.
func (n *Node) openNodeFile(ctx context.Context, address string, sealed []byte) ([]byte, string, error) {
	aead, err := n.nodeFileAEAD(ctx)
	if err != nil {
		return nil, "", err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, "", ErrNodeFileSealed
	}
	ns := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:ns], sealed[ns:], []byte(address))
	if err != nil {
		return nil, "", ErrNodeFileSealed
	}
	defer clear(plain)
	var f sealedFile
	if err := json.Unmarshal(plain, &f); err != nil {
		return nil, "", fmt.Errorf("the node file kept for this peer is damaged: %v", err)
	}
	return f.P12, f.Password, nil
}

// peerIdentity opens the node file kept for p and parses it as a join does.
func (n *Node) peerIdentity(ctx context.Context, p *Peer) (*url.URL, *NodeIdentity, error) {
	p12, password, err := n.openNodeFile(ctx, p.Address, p.NodeFile)
	if err != nil {
		return nil, nil, err
	}
	defer clear(p12)
	return ParseJoin(JoinRequest{Peer: p.Address, NodeP12: p12, NodePassword: password})
}
