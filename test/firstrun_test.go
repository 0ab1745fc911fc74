package test

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// init refuses a directory that holds other files (a source tree, a home
// directory): the CA's keys must not land among them. An empty directory
// is fine.
func TestInitRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "authority.go"), []byte("package ca\n"))
	r := runCLI(t, "init", "--dir", dir, "--trust-domain", "example.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if r.code != 1 || !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "authority.go") {
		t.Fatalf("init into a directory with other files: want exit 1 naming the file:\n%s", r)
	}
	oneLine(t, r)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("the refused init left %d entries in the directory, want only authority.go", len(entries))
	}
	empty := t.TempDir()
	mustRun(t, "init", "--dir", empty, "--trust-domain", "example.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if _, err := os.Stat(filepath.Join(empty, "agentca.json")); err != nil {
		t.Fatalf("init into an empty directory: %v", err)
	}
}

// `enroll --daemon` whose certificate expires while it cannot renew (the
// CA is down) and whose attestation cannot be read again (the token file
// is gone) exits 1 with a message at expiry, instead of retrying forever.
func TestAgentDaemonExitsAfterExpiryWithoutAttestation(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "10s"}})
	ca.start()
	agent, w, dir := startAgent(t, ca, "spiffe://example.org/agent/expiring", "10s")
	first := w.next(time.Now().Add(30*time.Second), "the first enrollment")
	ca.stop()
	if err := os.Remove(filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agent.done:
	case <-time.After(time.Until(first.leaf.NotAfter) + 20*time.Second):
		t.Fatalf("the agent still runs 20s after its certificate expired at %s with no token to enroll again:\n%s", first.leaf.NotAfter, agent.log())
	}
	agent.stopped = true
	var ee *exec.ExitError
	if !errors.As(agent.err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("agent exit: %v, want exit status 1\n%s", agent.err, agent.log())
	}
	if !strings.Contains(agent.log(), "no attestation to enroll again") {
		t.Errorf("the agent's last words do not say why:\n%s", agent.log())
	}
	if time.Now().Before(first.leaf.NotAfter) {
		t.Errorf("the agent gave up at %s, before its certificate expired at %s", time.Now(), first.leaf.NotAfter)
	}
}

// serve --ready-file appears once the daemon serves, with the actual
// addresses (here port 0 picked them), and is gone after SIGTERM;
// `health` says whether the daemon serves, and --wait waits for it.
func TestReadyFileAndHealth(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	if r := runCLI(t, "health", "--dir", c.Dir); r.code != 1 {
		t.Fatalf("health with no daemon: want exit 1:\n%s", r)
	} else {
		oneLine(t, r)
	}
	ready := filepath.Join(t.TempDir(), "ready.json")
	p := startProc(t, "serve", filepath.Join(t.TempDir(), "serve.log"), "serve", "--dir", c.Dir,
		"--https", "127.0.0.1:0", "--http", "127.0.0.1:0", "--ready-file", ready)
	if r := runCLI(t, "health", "--dir", c.Dir, "--wait", "60s"); r.code != 0 || strings.TrimSpace(r.stdout) != "ok" {
		t.Fatalf("health --wait:\n%s\nserve log:\n%s", r, p.log())
	}
	var addrs struct {
		HTTPS, HTTP string
		PID         int
	}
	eventually(t, 10*time.Second, 50*time.Millisecond, "the ready file", func() bool {
		b, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(b, &addrs) == nil
	})
	if addrs.PID != p.cmd.Process.Pid || strings.HasSuffix(addrs.HTTP, ":0") || addrs.HTTPS == "" {
		t.Fatalf("ready file %+v, want the actual addresses and pid %d", addrs, p.cmd.Process.Pid)
	}
	resp, err := http.Get("http://" + addrs.HTTP + "/health")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health at the ready file's address: %v", err)
	}
	resp.Body.Close()
	p.stop(t)
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the ready file outlived the daemon: %v", err)
	}
}

// SIGHUP applies the provisioners; a changed setting it cannot apply is
// named in a WARN line, once per SIGHUP, and the daemon keeps serving.
func TestSIGHUPWarnsAboutRestartSettings(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	c.editConfig(func(cfg map[string]any) {
		cfg["crl"] = map[string]any{"validity": "9m"}
		cfg["leaf"].(map[string]any)["min_ttl"] = "2m"
	})
	c.proc.signal(t, syscall.SIGHUP)
	eventually(t, 10*time.Second, 50*time.Millisecond, "a WARN naming crl and leaf.min_ttl", func() bool {
		return strings.Contains(c.proc.log(), "level=WARN") && strings.Contains(c.proc.log(), `settings="crl, leaf.min_ttl"`)
	})
	if strings.Contains(c.proc.log(), "provisioners,") {
		t.Errorf("SIGHUP warned about the provisioners, which it reloads:\n%s", c.proc.log())
	}
	if r := runCLI(t, "health", "--dir", c.Dir); r.code != 0 {
		t.Fatalf("the daemon stopped serving after SIGHUP:\n%s", r)
	}
}
