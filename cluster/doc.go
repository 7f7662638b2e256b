// Package cluster is cluster onboarding and staying in step: how a new appliance (node) takes
// over the shared state of a running one, how nodes keep that state equal afterwards, and the
// checked restore that a backup file and a join both end in. It is used
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
//     both ([ChallengeHeader], [ProofHeader]). A sends its shared state as a snapshot (below)
//     only to a node certificate of its own CA whose proof verifies under A's MBK, once per
//     challenge ([Node.CheckJoiner], [Node.SendState]); B checks the snapshot's key ID and
//     authenticator and takes it over ([Node.TakeOver]). Both then report the same key ID,
//     keys, card sets and slot credential key.
//
// A peer whose server certificate is not from the node file's CA fails the TLS handshake; a
// client without a node certificate of A's CA gets nothing from A ([ErrNotNode]); a node that
// cannot prove the MBK is refused by A ([ErrNoProof], [ErrKeyNotProven]) with no key ID in the
// refusal, and a backup of another MBK by B
// (*hsm.ForeignKeyError), before anything changes. Every outcome is audited on both sides
// (the Audit* keys).
//
// # The shared state and staying in step
//
// What the nodes share is the HSM's object store, the card set registry ([Registry]: which set
// is current or retired, the authenticators of its cards) and the slot credential key
// (hsm.SlotKeyCarrier, wrapped under the MBK). Operators, the management PKI and the audit log
// stay per node. The shared state moves as one snapshot (snapshot.go): a manifest with the
// state's [Version] and the digests of its parts, authenticated with the HSM's key derived from
// the MBK, then the registry, the wrapped slot key and the backup. There is no merge: a node
// counts its own changes in a version vector ([Node.Summary] notices them by the digest of its
// state) and takes a peer's snapshot only when it is newer ([Node.Sync]); an older or
// conflicting one is a [*StaleStateError] and changes nothing. A join takes the peer's state
// whatever the versions. A node whose state changed offers its version to the nodes that pulled
// from it ([Node.Watch], [Node.Offer], POST [OfferPath]); each pulls the snapshot itself, over
// mutual TLS with the node file it kept at the join ([StateFile]). [Node.Status] lists the nodes.
//
// # What this package must never do
//
// Hold the MBK or see a key in the clear: the state travels only as a snapshot under the MBK,
// made and checked by the HSM. Change anything on a join, sync or restore that has not
// authenticated its peer, its key ID and its whole snapshot. Take a state older than its own, or
// merge two. Tell a key ID to a node that has not proven the MBK. It never imports webconf: the
// management CA and the audit log reach it through the [Issuer] and [Recorder] interfaces.
//
// The node file a join was made with (the node certificate's private key and its password) is
// kept in [StateFile] so that the node can pull again, sealed (AES-256-GCM) under a key the
// HSM derives from the MBK and bound to the peer's address: the data directory alone does not
// give the node key away, and a node whose MBK changed since the join must join again
// ([ErrNodeFileSealed]; its status says so). Even opened, the node key alone gets nothing from
// a peer, which sends its state only to a node that proves the MBK.
//
// The design of the whole system, the cluster protocol among it, is in docs/design.md.
package cluster
