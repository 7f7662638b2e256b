package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// need returns the path of a command, failing under CI (where scripts/deps installs it) and
// skipping elsewhere when it is missing.
func need(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: scripts/deps installs it", name)
		}
		t.Skipf("%s is missing (scripts/deps installs it)", name)
	}
	return p
}

func runOK(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestPackage builds the Debian package twice (it must come out the same, byte for byte),
// inspects it with dpkg-deb, verifies its systemd unit, installs it into a throwaway root with
// dpkg --root, runs the installed binary, and checks that upgrade, removal and purge keep the
// data directory.
func TestPackage(t *testing.T) {
	need(t, "dpkg-deb")
	need(t, "dpkg")
	analyze := need(t, "systemd-analyze")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestPackage installs into a throwaway root with dpkg --root: it needs root, as CI has")
		}
		t.Skip("installing with dpkg --root needs root")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	debs := make([]string, 2)
	for i := range debs {
		out := t.TempDir()
		debs[i] = strings.TrimSpace(runOK(t, repo, nil, filepath.Join(repo, "scripts/package"), "-o", out))
	}
	a, err := os.ReadFile(debs[0])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(debs[1])
	if !bytes.Equal(a, b) || filepath.Base(debs[0]) != filepath.Base(debs[1]) {
		t.Errorf("two builds of the same commit differ: %s (%d bytes) and %s (%d bytes)", debs[0], len(a), debs[1], len(b))
	}
	deb := debs[0]
	if !regexp.MustCompile(`^keyquorum_0\.0~git\d{14}\.[0-9a-f]{12}(\+dirty)?_[a-z0-9]+\.deb$`).MatchString(filepath.Base(deb)) {
		t.Errorf("package name %s", filepath.Base(deb))
	}

	// The control fields.
	fields := runOK(t, repo, nil, "dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Recommends", "Architecture")
	for _, want := range []string{"Package: keyquorum\n", "Depends: pcscd\n", "Recommends: libifd-cyberjack6\n"} {
		if !strings.Contains(fields, want) {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	version := regexp.MustCompile(`(?m)^Version: (\S+)$`).FindStringSubmatch(fields)
	if version == nil {
		t.Fatalf("no version in\n%s", fields)
	}
	if conffiles := runOK(t, repo, nil, "dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(conffiles) != "/etc/keyquorum/keyquorum.conf" {
		t.Errorf("conffiles: %q", conffiles)
	}

	// The files.
	list := runOK(t, repo, nil, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/keyquorum\n",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/keyquorum.service\n",
		"-rw-r--r-- root/root .* ./usr/lib/sysusers.d/keyquorum.conf\n",
		"-rw-r--r-- root/root .* ./etc/keyquorum/keyquorum.conf\n",
		"-rw-r--r-- root/root .* ./usr/share/man/man1/keyquorum.1.gz\n",
		"-rw-r--r-- root/root .* ./usr/share/doc/keyquorum/copyright\n",
	} {
		if !regexp.MustCompile(want).MatchString(list) {
			t.Errorf("the package lacks %s:\n%s", want, list)
		}
	}
	if strings.Contains(list, "./var/lib/keyquorum") {
		t.Error("the package ships the data directory: removing the package would remove it")
	}

	// Install into a throwaway root; the maintainer scripts act on it through DPKG_ROOT.
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		os.WriteFile(filepath.Join(root, f), nil, 0o644)
	}
	dpkg := func(args ...string) string {
		return runOK(t, repo, nil, "dpkg", append([]string{"--root=" + root, "--force-depends", "--force-script-chrootless"}, args...)...)
	}
	dpkg("-i", deb)
	bin := filepath.Join(root, "usr/bin/keyquorum")
	if v := runOK(t, repo, nil, bin, "version"); !strings.HasPrefix(v, "keyquorum "+version[1]+" ") {
		t.Errorf("installed keyquorum version: %q, want %s", v, version[1])
	}
	if passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); !regexp.MustCompile(`(?m)^keyquorum:x:\d+:\d+:[^:]*:/var/lib/keyquorum:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("postinst did not create the system user:\n%s", passwd)
	}
	// The shipped configuration is valid as it stands.
	conf := filepath.Join(root, "etc/keyquorum/keyquorum.conf")
	if out := runOK(t, repo, nil, bin, "serve", "--config", conf, "--check"); !strings.Contains(out, "data = /var/lib/keyquorum") || !strings.Contains(out, "pinpad = pcsc") {
		t.Errorf("serve --check of the shipped configuration:\n%s", out)
	}

	// The unit: what a key service needs is there, and systemd accepts every line of it.
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/keyquorum.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify", "ExecStart=/usr/bin/keyquorum serve --config /etc/keyquorum/keyquorum.conf",
		"User=keyquorum", "StateDirectory=keyquorum", "LimitCORE=0", "MemorySwapMax=0", "Restart=on-failure",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "LockPersonality=yes",
		"MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line) + `$`).Match(unit) {
			t.Errorf("the unit lacks %q", line)
		}
	}
	// systemd-analyze checks that the executable exists: point the copy at the installed one.
	check := filepath.Join(t.TempDir(), "keyquorum.service")
	os.WriteFile(check, bytes.ReplaceAll(unit, []byte("/usr/bin/keyquorum"), []byte(bin)), 0o644)
	cmd := exec.Command(analyze, "verify", "--man=no", check)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	cmd = exec.Command(analyze, "security", "--offline=true", "--threshold=20", check)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
	} else if m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out); m != nil {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}

	// Upgrade (a reinstall runs the same maintainer paths), removal and purge keep the data
	// directory; an operator's change of the configuration survives the upgrade.
	data := filepath.Join(root, "var/lib/keyquorum")
	os.MkdirAll(data, 0o700)
	os.WriteFile(filepath.Join(data, "ceremony.db"), []byte("journal"), 0o600)
	os.WriteFile(conf, append(mustRead(t, conf), "host = kq1.example\n"...), 0o644)
	dpkg("-i", deb)
	if !strings.Contains(string(mustRead(t, conf)), "host = kq1.example") {
		t.Error("the upgrade replaced the operator's configuration")
	}
	dpkg("-r", "keyquorum")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Error("removal left the binary")
	}
	if _, err := os.Stat(conf); err != nil {
		t.Error("removal (not purge) removed the configuration")
	}
	dpkg("-P", "keyquorum")
	if got, err := os.ReadFile(filepath.Join(data, "ceremony.db")); err != nil || string(got) != "journal" {
		t.Errorf("purge touched the data directory: %q %v", got, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
