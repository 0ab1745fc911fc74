package test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// requireHAProxy fails (not skips) the test when haproxy is missing.
func requireHAProxy(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr == nil {
			return "/usr/sbin/haproxy"
		}
		t.Fatalf("the HAProxy test needs haproxy (the Debian package haproxy; make deps installs it): %v", err)
	}
	return p
}

// TestHAProxyCRL: HAProxy with the document's haproxy.cfg (verify
// required, crl-file) accepts a valid agent and passes its certificate to
// the upstream, refuses an agent of another CA in the handshake, and
// refuses a revoked agent once the refresh script has fetched the CRLs
// and reloaded HAProxy (SIGUSR2 to the master).
func TestHAProxyCRL(t *testing.T) {
	t.Parallel()
	bin := requireHAProxy(t)
	c, files, hits := nginxCA(t)
	other := newCA(t, caOptions{trustDomain: "other.example"})
	other.start()
	good := enrollAgent(t, c, "spiffe://example.org/agent/good")
	bad := enrollAgent(t, c, "spiffe://example.org/agent/bad")
	stranger := enrollAgent(t, other, "spiffe://other.example/agent/stranger")

	// HAProxy wants the key in the certificate file.
	pemCert, err := os.ReadFile(filepath.Join(files.dir, "server.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(files.dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(files.dir, "haproxy.pem"), append(pemCert, key...))
	crlFile := filepath.Join(files.dir, "crl.pem")
	refresh := crlRefresher(t, files, bad, crlFile)
	refresh("true")

	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer(
		"/etc/haproxy/agentca/server.pem", filepath.Join(files.dir, "haproxy.pem"),
		"/etc/haproxy/agentca/", files.dir+"/",
		"bind :8447 ssl", "bind 127.0.0.1:"+port+" ssl",
		"127.0.0.1:9000", strings.TrimPrefix(files.upstream, "http://"),
	).Replace(docBlock(t, "haproxy.cfg"))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, cfg, []byte(conf))
	out := &lockedWriter{}
	cmd := exec.Command(bin, "-W", "-db", "-f", cfg, "-p", filepath.Join(dir, "haproxy.pid"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	log := func() string { out.mu.Lock(); defer out.mu.Unlock(); return out.buf.String() }
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", log())
		}
	})
	eventually(t, 10*time.Second, 20*time.Millisecond, "haproxy to listen", func() bool {
		select {
		case <-done:
			t.Fatalf("haproxy exited:\n%s", log())
		default:
		}
		conn, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	u := "https://127.0.0.1:" + port + "/"
	wantAccepted(t, u, good)
	wantAccepted(t, u, bad)
	wantRefusedTLS(t, u, stranger, hits)

	mustRun(t, "revoke", "--dir", c.Dir, "--serial", bad.creds.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	time.Sleep(300 * time.Millisecond) // the CRL debounce (100 ms) and build
	before, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	refresh("kill -USR2 " + strconv.Itoa(cmd.Process.Pid))
	if after, _ := os.ReadFile(crlFile); bytes.Equal(before, after) {
		t.Fatal("the refresh script did not replace the CRL file")
	}
	eventually(t, 5*time.Second, 100*time.Millisecond, "haproxy to refuse the revoked agent after the reload", func() bool {
		_, _, err := tryCall(u, bad)
		return err != nil
	})
	wantRefusedTLS(t, u, bad, hits)
	wantAccepted(t, u, good)
}

// wantRefusedTLS requires the handshake to fail without reaching the
// upstream.
func wantRefusedTLS(t *testing.T, u string, a *nginxAgent, hits *atomic.Int64) {
	t.Helper()
	before := hits.Load()
	code, body, err := tryCall(u, a)
	if err == nil || hits.Load() != before {
		t.Fatalf("%s as %s: got %d %q, err %v (upstream hits %d → %d); want the handshake refused", u, a.id, code, body, err, before, hits.Load())
	}
}
