// Package pcscdtest starts a private pcscd for a test binary: real pcsc-lite, with the reader
// drivers the test names, on a socket no other process uses.
//
// pcscd hard-codes its socket at /run/pcscd/pcscd.comm, so the daemon runs in a private mount
// namespace (unshare -m) with a temporary directory bind-mounted on /run/pcscd; the test process
// reaches it through PCSCLITE_CSOCK_NAME. libpcsclite reads that variable once per process, so a
// test binary starts one daemon, in TestMain, before anything touches PC/SC.
//
// Start refuses (ErrUnavailable) when pcscd, unshare or root are missing; callers skip on that
// only outside CI (see Require).
package pcscdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrUnavailable means this machine cannot run a private pcscd.
var ErrUnavailable = errors.New("private pcscd unavailable")

// Reader is one reader.conf.d entry.
type Reader struct {
	FriendlyName string
	DeviceName   string
	LibPath      string
	ChannelID    string // optional
}

// Daemon is a running private pcscd.
type Daemon struct {
	Dir    string // the temporary directory: socket, config, log
	Socket string
	cmd    *exec.Cmd
	log    *syncBuffer
	done   chan struct{} // closed when pcscd has exited
}

// syncBuffer is a bytes.Buffer pcscd's output and Log can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs pcscd with the given readers and waits until its socket answers. It sets
// PCSCLITE_CSOCK_NAME for this process.
func Start(readers ...Reader) (*Daemon, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: needs root for a private mount namespace", ErrUnavailable)
	}
	for _, tool := range []string{"pcscd", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				return nil, fmt.Errorf("%w: %s not installed", ErrUnavailable, tool)
			}
		}
	}
	dir, err := os.MkdirTemp("", "pcscd-")
	if err != nil {
		return nil, err
	}
	confDir := filepath.Join(dir, "reader.conf.d")
	runDir := filepath.Join(dir, "run")
	for _, d := range []string{confDir, runDir, "/run/pcscd"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for i, r := range readers {
		var conf strings.Builder
		fmt.Fprintf(&conf, "FRIENDLYNAME %q\nDEVICENAME %s\nLIBPATH %s\n", r.FriendlyName, r.DeviceName, r.LibPath)
		if r.ChannelID != "" {
			fmt.Fprintf(&conf, "CHANNELID %s\n", r.ChannelID)
		}
		if err := os.WriteFile(filepath.Join(confDir, fmt.Sprintf("reader%d", i)), []byte(conf.String()), 0o644); err != nil {
			return nil, err
		}
	}
	pcscd := "pcscd"
	if _, err := exec.LookPath(pcscd); err != nil {
		pcscd = "/usr/sbin/pcscd"
	}
	script := fmt.Sprintf("mount --bind %q /run/pcscd && exec %s -f -d -c %q", runDir, pcscd, confDir)
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pcscd: %w", err)
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(runDir, "pcscd.comm"), cmd: cmd, log: log, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	os.Setenv("PCSCLITE_CSOCK_NAME", d.Socket)

	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		if _, err := os.Stat(d.Socket); err == nil {
			return d, nil
		}
		select {
		case <-d.done:
			break wait
		case <-deadline:
			break wait
		case <-tick.C:
		}
	}
	d.Stop()
	return nil, fmt.Errorf("pcscd did not come up: %s", d.Log())
}

// Log is what pcscd printed so far.
func (d *Daemon) Log() string { return d.log.String() }

// Stop ends the daemon and removes its directory.
func (d *Daemon) Stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	os.RemoveAll(d.Dir)
}

// Require reports whether a test that needs a private pcscd may skip when Start failed: only
// outside CI. In CI (CI=true) a missing component is a failure.
func Require(err error) (skip bool) {
	return errors.Is(err, ErrUnavailable) && os.Getenv("CI") != "true"
}

// BuildDriver compiles a c-shared reader driver from the Go package pkg (a path relative to the
// module root, e.g. "./cmd/ifd-cyberjacksim") into dir and returns the library's path.
func BuildDriver(ctx context.Context, moduleRoot, pkg, dir string) (string, error) {
	out := filepath.Join(dir, "libifd-"+filepath.Base(pkg)+".so")
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Dir = moduleRoot
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build driver %s: %v: %s", pkg, err, msg)
	}
	return out, nil
}
