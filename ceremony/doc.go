// Package ceremony is the room that sequences the key ceremonies of Keyquorum: every step with
// the PIN pad, the smart cards and the HSM happens here, in order, and is written down before
// the next one starts.
//
// # Ceremonies
//
// A [Manager] runs one ceremony at a time (there is one PIN pad); a second [Manager.Start] is
// refused with a [*BusyError] that names who started what. The kinds:
//
//   - [KindGenerate]: only when the HSM holds no Master Backup Key. Generate the MBK in memory,
//     split it k-of-n, write one share record to each of n TCOS cards (PIN on the pad, read back
//     and compare), then read k cards back, combine, check the key ID and load the key into the
//     HSM.
//   - [KindLoad]: read k distinct cards of one set, combine, check, load into the HSM (disaster
//     recovery, cluster join).
//   - [KindCopyCard]: copy the share of one card onto another (a second set for a DR site).
//   - [KindChangePIN]: change the PIN of a card's share slot or slot user slot, on the pad.
//   - [KindSlotUserCard]: write a PKCS#11 slot credential, issued by the HSM for this card's
//     serial, to a card's slot user slot. [KindActivateSlot] reads it back and activates the slot.
//   - [KindFactoryReset]: zeroize the HSM and clear the ceremony state; the audit log is kept.
//
// The prompts on the pad follow the appliance's manual: "Write New Key press OK/Cancel",
// "Insert 1. card press OK/Cancel", "Enter PIN", "Read New Key press OK/Cancel".
//
// # Journal and crash safety
//
// Every transition of a ceremony (a card about to be written, a card written, a card read, the
// key about to be loaded, the outcome) is committed to bbolt before the next card or HSM
// operation starts, in one transaction together with its audit entry. The MBK lives only in
// memory, so when the process dies the journal tells exactly what can still be done; [Open]
// classifies an interrupted ceremony ([Pending], [Status]):
//
//   - Generate interrupted while writing: the cards written so far are unusable; a factory reset
//     and a new key generation are required.
//   - Generate interrupted after all n cards were written: the key is on the cards; [Manager.Resume]
//     reads k of them and loads the HSM.
//   - Load interrupted: [Manager.Resume] reads the cards again.
//
// A pad timeout or a disconnected reader stalls the ceremony instead of ending it: finished
// cards stay done, and [Manager.Retry] repeats the step that failed.
//
// # Schema
//
// One bbolt file, ceremony.db, in the data directory:
//
//	meta/
//	    schema        uint32 big-endian: the schema version (see migrations)
//	    audit-head    JSON auditHead: seq and hash of the last audit entry
//	state/            what a factory reset clears
//	    current       uint64 big-endian: the ceremony that is running or was interrupted
//	    pending       JSON Pending: what an interrupted ceremony requires (resume, reset)
//	    keyset        JSON KeySet: the card set of the loaded MBK (IDs, quorum, serials)
//	ceremonies/       one entry per ceremony, never deleted
//	    <id>          uint64 big-endian → JSON Journal, rewritten at every transition
//	audit/            append-only, hash-chained
//	    <seq>         uint64 big-endian → JSON AuditEntry
//
// Byte slices read from bbolt are copied (or decoded) before their transaction ends. Nothing
// talks to a card, the pad or the HSM inside a transaction.
//
// # Events and the audit log
//
// [Manager.Subscribe] delivers [Event]s: each one is a full snapshot of what the operator should
// see (pad display, step, cards done, the deadline of the current wait, PIN tries left, the
// error and what to do next, the outcome), so a late or lagging subscriber only needs the last
// one. A slow subscriber loses intermediate events, never the latest, and never blocks a
// ceremony. The audit log ([Manager.VerifyAudit], [Manager.ExportAudit]) records who did what,
// with which cards, share indexes and key ID; each entry carries the hash of the one before, so
// an edited or deleted entry is found. [Manager.Protocol] assembles the printable record of one
// ceremony.
//
// # What this room must never do
//
// Write key material, a share or a PIN anywhere: not to the journal, the audit log, an event,
// an error or a log line. PINs never reach the host at all (they are typed on the pad); the MBK
// and shares are []byte, zeroed as soon as they are no longer needed. It never talks to the
// browser (that is webconf) and knows nothing of APDUs (that is pinpad).
package ceremony
