// Package account is WebConf's account and operator management pages: an operator's own
// account page (identity, role, security keys, command-line approvals), the endpoints the page
// script calls to register a security key and to make the fresh WebAuthn assertion a dangerous
// action needs (/webauthn/...), and the administrators' Operators page (roles, issuing and
// revoking operator certificates, removing an operator's security keys, the one-time download
// of an issued PKCS#12 file) and /crl.pem. The operator security itself — identities, roles,
// step-up tokens, the management CA — is webconf/operator; this package is its pages, framed by
// webconf/pages.
//
// # What this package must never do
//
// Keep an issued private key or its password: the file waits in webconf/operator's memory for
// its one download by the issuing administrator, and the password is shown once. Let an
// administrator revoke the certificate their own browser uses. Mint a token without a verified
// assertion with user verification from a registered key, or for an action the operator's role
// does not allow.
//
// The design of the whole system is in docs/design.md.
package account
