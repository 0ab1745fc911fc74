package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
