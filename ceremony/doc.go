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
//     recovery, cluster join). When the HSM names a key, only cards of that key are taken;
//     otherwise cards are collected per set and the first set to reach its quorum is loaded, so
//     a card of another set inserted first never locks out the right ones.
//   - [KindCopyCard]: copy the share of one card onto another (a second set for a DR site).
//     Its Overwrite permission covers other sets' shares only (see Overwriting a share).
//   - [KindChangePIN]: change the PIN of a card's share slot or slot user slot, on the pad.
//   - [KindSlotUserCard]: write a PKCS#11 slot credential, issued by the HSM for this card's
//     serial, to a card's slot user slot. [KindActivateSlot] reads it back and activates the slot.
//   - [KindFactoryReset]: zeroize the HSM and clear the ceremony state; the audit log is kept.
//   - [KindReissue]: replace the card set without changing the key. Read k cards of the current
//     set, reconstruct the MBK, check it against the HSM's key ID, split it again with a new set
//     ID and a new k-of-n, write and verify the n new cards. The new set becomes current and the
//     old one retired in one transaction at the end; from then on its cards are refused by Load,
//     Copy and Card check ([*RetiredSetError]: "this card belongs to a retired set"). The MBK does
//     not change, so every backup stays restorable. Cards of the current set are refused as
//     targets of the new shares, so an interrupted re-issue always leaves the old set whole.
//   - [KindCardCheck]: one custodian checks one card, PIN on the pad, no quorum and no
//     reconstruction: [CardCheck] says whether it holds an intact share of the current set (which
//     index, written when), an altered one, one of a retired or foreign set, or no share.
//   - [KindPrepareCards]: lay N cards out in the pad's card profile (DF, slot files, slot PINs)
//     where they lack it, each new PIN chosen on the pad; a card that does not allow it is
//     refused with what a survey of it found.
//
// Any ceremony that meets a card in its NullPIN (transport) state has the custodian choose its
// first PIN on the pad and goes on; PIN tries a card does not tell are reported as unknown,
// never read by a command that might spend one.
//
// # Card sets and authenticators
//
// The appliance keeps a registry of the card sets it knows ([CardSet]): current, retired,
// abandoned (its ceremony ended before the set was complete), former (current once, before
// another key or set was generated or loaded). For every share it keeps the card it went to and
// an authenticator: HMAC-SHA256 of the card's share record under a key the HSM derives from the
// MBK ([hsm.Authenticator]). A card check asks the HSM whether the record a card holds matches
// its authenticator. Authenticators reveal nothing of the shares and need no protection; they are
// made when the cards are written (a Generate computes them with [hsm.AuthenticatorOf] while the
// MBK still exists, before the HSM holds it; a Re-issue has the HSM compute them) and, for a set
// first seen in a Load, for the cards that Load read. The authenticator key is re-created from
// the MBK by every HSM that loads it, so a restored or rebuilt appliance checks the same cards;
// the registry itself lives in this journal, not in HSM backups.
//
// # Overwriting a share
//
// Every ceremony that writes a card reads it first. A card holding a share of a set in use (the
// current set, one still being issued, the set a copy copies from, a set of the HSM's key) is
// overwritten only when the operator confirms that exact loss: which share of which set, how many
// of the set's shares and cards this appliance knows of then remain, and whether the quorum is
// still reachable. The confirmed loss is audited; the registry forgets the card and learns copies.
//
// # Questions on the screen
//
// A pad that cannot report OK and Cancel (a cyberJack through PC/SC) has its questions answered
// on the screen. Each question has an ID, journaled while it is open and carried by the event
// ([Event.Question]); [Manager.Answer] must name it, and an answer to a question no longer asked
// is refused ([*StaleAnswerError]), so a late or double-clicked OK never answers the next one.
// OK to a destructive question (an overwrite, the last PIN try) needs the caller's fresh
// security-key confirmation ([Answer].SteppedUp). Answers are audited with the question's text.
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
//   - Re-issue interrupted: the old set stays current and whole; new cards written so far hold
//     shares of an abandoned set and are refused. Interrupted once all n new cards were written
//     and verified, it is finished instead: the new set is complete.
//
// A pad timeout or a disconnected reader stalls the ceremony instead of ending it: finished
// cards stay done, and [Manager.Retry] repeats the step that failed.
//
// # Rooms inside
//
// Package ceremony is the Manager and its public API (manager.go, queries.go, protocol.go,
// record_audit.go); the rest lives in three internal packages, imported one way:
//
//	ceremony                    the Manager: start, resume, retry, answer, cancel, queries
//	  ceremony/internal/attempt the run of one attempt and every kind's state machine
//	  ceremony/internal/api     Config, Pad and HSM, events and their broker, errors
//	  ceremony/internal/journal the bbolt store and migrations, the records, the audit log
//	                            (chain, index, queries), the card set registry
//
// attempt imports api and journal, api imports journal, journal imports none of them. The types
// callers use keep their names here (aliases.go: ceremony.Journal is journal.Journal, …).
//
// # Schema
//
// One bbolt file, ceremony.db, in the data directory, with the buckets meta, state, sets,
// ceremonies, audit and audit-index; package journal draws the tree and keeps the migrations.
// Byte slices read from bbolt are copied (or decoded) before their transaction ends. Nothing
// talks to a card or the pad inside a transaction; the one HSM call made inside one is the MAC
// of the audit entries it appends (auditkey.go: bounded, microseconds on the soft HSM), so that
// no entry is ever committed without the MAC it should carry.
//
// # Events and the audit log
//
// [Manager.Subscribe] delivers [Event]s: each one is a full snapshot of what the operator should
// see (pad display, step, cards done, the deadline of the current wait, PIN tries left, the
// error and what to do next, the outcome), so a late or lagging subscriber only needs the last
// one. A slow subscriber loses intermediate events, never the latest, and never blocks a
// ceremony. The audit log ([Manager.VerifyAudit], [Manager.ExportAudit]) records who did what,
// with which cards, share indexes and key ID; each entry carries the hash of the one before, so
// an edited or deleted entry is found, and, while the HSM holds a master backup key, a MAC the
// HSM makes over its seq and hash under a key derived from the MBK, so that a history rewritten
// with recomputed hashes is found too, naming the first forged entry. [Manager.AuditCheckpoint]
// gives an auditor a checkpoint to keep outside the appliance; [Manager.VerifyAuditCheckpoint]
// proves the log still extends it (which finds a cut log, or a rewrite by someone holding the
// MBK). [Manager.Protocol] assembles the printable record of one ceremony.
//
// # What this room must never do
//
// Write key material, a share or a PIN anywhere (an authenticator is neither: it is a MAC): not to the journal, the audit log, an event,
// an error or a log line. PINs never reach the host at all (they are typed on the pad); the MBK
// and shares are []byte, zeroed as soon as they are no longer needed. It never talks to the
// browser (that is webconf) and knows nothing of APDUs (that is pinpad).
//
// The design of the whole system (the state machines, the journal and the card layout among
// it) is in docs/design.md.
package ceremony
