// Package cluster is cluster onboarding: how a new appliance (node) takes over the state of a
// running one, and the checked restore that a backup file and a join both end in. It is used
// by WebConf's JSON API and cluster page and, through the API, by `keyquorum cluster`; it is
// not web code and knows nothing of pages.
//
// Every node of a cluster holds the same master backup key (MBK), loaded from the cards of one
// set. A new node B takes over the state of a node A in three steps:
//
//  1. An administrator of A issues a node certificate for B ([Node.IssueNodeCert]; POST
//     /api/v1/cluster/nodes, `keyquorum cluster add-node`): a client certificate of A's
//     management CA with the organisation [NodeOrganization], in a PKCS#12 file with A's CA
//     certificate, under a one-time password. It is recorded in A's operator list like any
//     certificate A issues, so it can be revoked on A's Operators page. The file and its
//     password travel to B's administrator (e.g. on a USB stick, the password apart).
//  2. B loads the MBK from k cards of the set (a key load ceremony).
//  3. An administrator of B joins ([Node.Join]; POST /api/v1/cluster/join, `keyquorum cluster
//     join`) with A's address and the node file: B connects to A over mutually authenticated
//     TLS 1.3, trusting only the CA in the node file and presenting the node certificate, and
//     fetches a one-time challenge (GET [ChallengePath], [Node.Challenge]), answers it with
//     its HSM's authenticator (hsm.Authenticator: HMAC-SHA256 under a key derived from the MBK)
//     of the challenge and its node certificate ([Prove]), and asks for GET [StatePath] with
//     both ([ChallengeHeader], [ProofHeader]). A sends its object store as a backup (the
//     hsm/backup format: encrypted under the MBK) only to a node certificate of its own CA
//     whose proof verifies under A's MBK, once per challenge ([Node.CheckJoiner],
//     [Node.SendState]); B checks the backup's key ID against its own before restoring
//     ([Restore]). Both then report the same key ID and keys.
//
// A peer whose server certificate is not from the node file's CA fails the TLS handshake; a
// client without a node certificate of A's CA gets nothing from A ([ErrNotNode]); a node that
// cannot prove the MBK is refused by A ([ErrNoProof], [ErrKeyNotProven]) with no key ID in the
// refusal, and a backup of another MBK by B
// (*hsm.ForeignKeyError), before anything changes. Every outcome is audited on both sides
// (the Audit* keys).
//
// # What this package must never do
//
// Hold the MBK or see a key in the clear: the state travels only as a backup under the MBK,
// made and checked by the HSM. Write the node file's private key to disk: it is used in memory
// for the join. Change anything on a join or restore that has not authenticated its peer, its
// key ID and its whole backup. It never imports webconf: the management CA and the audit log
// reach it through the [Issuer] and [Recorder] interfaces.
//
// The design of the whole system, the cluster protocol among it, is in docs/design.md.
package cluster
