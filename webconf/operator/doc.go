// Package operator is the operator security of WebConf: who a client certificate is, whether it
// is revoked, what its role allows, and the fresh security key (WebAuthn) assertion a dangerous
// action needs. It knows nothing of pages: it answers with values and typed errors, which the
// rooms above (webconf, webconf/api, webconf/pages) turn into pages and JSON problems.
//
// # The management PKI
//
// On first start [LoadPKI] creates, in DataDir/webconf, a management CA (ECDSA P-256, ten
// years), a server certificate for 127.0.0.1, ::1, localhost and the configured host names
// (replaced at start when it no longer covers them, is near its end or is not the CA's), and the
// first administrator's client certificate as a PKCS#12 file (admin.p12) with a random password
// in a 0600 file beside it. The CA certificate is public (/ca.pem). [LoadCABundle] reads further
// CAs whose client certificates are accepted (e.g. the corporate CA of operators' PIV cards); a
// CRL can be configured for each ([LoadCRLs]): it is read again whenever the file changes, and a
// CA whose CRL is unusable or past its next update has its certificates refused until a current
// one is installed (fail closed, [*CRLError]). A CRL file is bound by key to the CA that signed it
// at start: a file replaced by another CA's CRL, or by an older CRL (CRL number or thisUpdate
// going back, also across restarts: the last CRL seen of each CA is kept in the operator list,
// [CRLMemory]), is unusable, never a reason to let a certificate in ([CRLSet]); at start it
// is an error. The management CA's own revocations are kept in
// the operator list and published as its CRL ([CRLFile], /crl.pem).
//
// # Operators, identities and roles
//
// [Operators] is the operator list, a bbolt file of its own beside the management PKI (the
// schema is drawn on the type). An operator is keyed by a hash of the public key of the CA the
// chain was verified against ([Identity].CA, [CAKey]) and the certificate's issuer and subject
// ([Identity].ID): a renewed certificate is the same operator; the same subject from another
// CA is not, even when that CA has the same name (two appliances with the same short host name
// have same-named management CAs). An entry of schema 1, keyed by names only, is taken over on
// first sight by a certificate of the management CA when its issuer name is the management
// CA's, or of a bundle CA when no other configured CA has that CA's name; otherwise it stays
// unbound and the certificate is a new operator without a role. Revocations on the Operators
// page hold for the certificates of every trusted CA, not only the management CA's. The subject, with its UPN or e-mail subject alternative name in brackets,
// is the operator's name ([Identity.Name]): the ceremony journal and the audit log record it.
// [Auth.Admit] identifies the operator of every request's verified certificate chain, refuses a
// revoked one ([*RevokedError]) and records a new one on first sight, without a role.
//
// Roles ([Role]): admin (ceremonies, restore, cluster join, factory reset, operator management),
// custodian (the smart card tools on their own card, steering a running ceremony), auditor
// (read-only: status, audit log, protocols). An operator without a role sees only their account
// page. The first administrator's certificate is given the admin role at the first start
// ([Operators.Bootstrap]); the last administrator cannot lose it ([ErrLastAdmin]);
// [AuthConfig].RecoverAdmin (serve --recover-admin) gives it back when every administrator has
// lost their security key. The role table ([Action], [RuleOf], [Allowed], [NeedsFresh]) says
// which roles may do what and which actions are dangerous; a ceremony kind it does not name is
// an administrator's, with a fresh assertion, so a new kind is safe before anyone thinks about
// it. Which route does which action is WebConf's route table (webconf/routeactions.go).
//
// # Security keys, step-up tokens and approvals
//
// A dangerous action needs, on top of the certificate, a fresh WebAuthn assertion with user
// verification (github.com/go-webauthn/webauthn), so that a stolen, unlocked laptop is not
// enough. [Auth.RelyingParty] binds WebAuthn to the configured host name and port (an
// [*OriginError] says where to open the page instead). The first security key of an operator
// needs only the certificate (the bootstrap); every further one needs an assertion with a
// registered key. Which keys may be registered at all is an [AttestationPolicy] (allowed
// models by AAGUID, attestation formats, vendors' attestation roots; by default none is
// required), checked after the library verified the attestation statement ([*AttestationError]). [StepUps] keeps the WebAuthn ceremonies under way and the tokens their
// assertions earned: random, kept only as a hash, bound to one operator, one action and the
// request's [Details] (its parameters by name, as a digest: an approval of "2 of 3" does not
// start "3 of 5", [*DetailsError]), valid once, for two minutes from a page ([PageGrantTTL]) or
// five minutes as a command-line approval ([CLIGrantTTL]) that the CLI sends in the
// [ApprovalHeader]. A command-line request refused for want of an approval waits as a
// [PendingRequest] ([StepUps.Hold], ten minutes, [RequestTTL]) that its operator sees in words
// on the account page and approves there.
//
// # Issued certificates
//
// [Auth.IssueRecorded] makes a client certificate of the management CA with a new P-256 key,
// records it in the operator list (so that it is listed and can be revoked) and returns its
// PKCS#12 file under a new one-time password; [Downloads] keeps such a file in memory for its one
// download by the issuing administrator, within ten minutes. [Auth.IssueNode] does the same for
// a node certificate of cluster onboarding (package cluster). Role changes, security key
// registrations and removals, issuance, revocation and approvals are written to the audit log
// ([AuditRecorder], the Audit* keys).
//
// # What this package must never do
//
// Render a page or know a route. Store a step-up token or an approval in the clear, or an
// issued private key or its password at all (the PKCS#12 file waits in memory for its one
// download; its password is shown once and kept nowhere). Let a certificate through whose CA's
// CRL it cannot read. Let the last administrator lose the role. Hold or see the MBK, a share or
// a PIN: operators prove themselves with certificates and security keys, never with a secret of
// the ceremony.
//
// The design of the whole system is in docs/design.md.
package operator
