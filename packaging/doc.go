// Package packaging holds what turns Keyquorum into a Debian package — the nfpm description
// (nfpm.yaml), the hardened systemd unit (keyquorum.service), the default configuration
// (keyquorum.conf), the system user (debian/sysusers.conf) and the maintainer scripts (debian/)
// — and the test that builds the package with scripts/package and installs it into a
// throwaway root. It has no code of its own: the package is built from cmd/keyquorum.
//
// What this room must never do: make a maintainer script remove the data directory
// (/var/lib/keyquorum holds the journal, the audit log and possibly the only copy of keys), or
// ship a configuration that puts a secret in a file readable by others.
package packaging
