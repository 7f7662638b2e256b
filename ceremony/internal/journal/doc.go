// Package journal is the room of the ceremony journal's persistence: the bbolt file
// (ceremony.db) and its migrations, the records written into it, the hash-chained audit log with
// its index and queries, its MACs and auditor checkpoints (auditauth.go), and the card set
// registry. Everything here is a plain type or a function
// over a *bolt.Tx, so a caller composes several of them into the one transaction that makes a
// transition durable; [Store] runs those transactions and counts them.
//
// Package ceremony names these types for its callers (ceremony.Journal is [Journal],
// ceremony.AuditEntry is [AuditEntry], ceremony.CardSet is [CardSet], …): nothing outside
// package ceremony imports this one.
//
// # Schema
//
// One bbolt file, [DBFile], in the data directory:
//
//	meta/
//	    schema        uint32 big-endian: the schema version (see Migrations)
//	    audit-head    JSON AuditHead: seq and hash of the last audit entry
//	    audit-verified JSON AuditHead: the checkpoint of the last verification
//	    audit-epoch   (schema 4) JSON AuditEpoch: the key the last append was authenticated under
//	state/            what a factory reset clears
//	    current       uint64 big-endian: the ceremony that is running or was interrupted
//	    pending       JSON Pending: what an interrupted ceremony requires (resume, reset)
//	    keyset        JSON KeySet: the card set of the loaded MBK (IDs, quorum, serials)
//	sets/             the card set registry (schema 2); kept by a factory reset, like the audit log;
//	                  replaced whole by a cluster peer's (shared.go: EncodeSets, DecodeSets, ReplaceSets)
//	    <set id>      16 bytes → JSON CardSet
//	ceremonies/       one entry per ceremony, never deleted
//	    <id>          uint64 big-endian → JSON Journal, rewritten at every transition
//	audit/            append-only, hash-chained, MAC'd while the HSM holds a key (schema 4)
//	    <seq>         uint64 big-endian → JSON AuditEntry
//	audit-index/      (schema 3) empty values under field|seq keys: see auditquery.go
//
// A migration is never edited once released: a change of schema is a new one at the end of
// [Migrations], run in its own transaction together with the new version number.
//
// # What this room must never do
//
// Import package ceremony or anything that talks to a device: no card, pad or HSM is touched
// here, and nothing here waits — but for the [AuditKey] package ceremony hands to [Store]: the
// HSM makes and checks the audit MACs (auditauth.go), bounded, inside the appending transaction. Hold a byte slice read from bbolt past its transaction (records
// are decoded or copied first). Store key material, a share or a PIN: the records name cards,
// share indexes, set and key IDs and authenticators (MACs), never a secret. Rewrite or delete an
// audit entry: the log only grows (the MAC of an entry is added in the transaction that
// appends it), and [VerifyAudit] finds any edit.
package journal
