package test

import (
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentWatch observes an agent's --out directory the way a service that
// reloads its certificate does, checking every observation.
type agentWatch struct {
	t     *testing.T
	ca    *testCA
	agent *proc
	dir   string
	id    string
	seen  []*creds    // distinct certificates, in order
	at    []time.Time // when each was first seen
	mism  time.Time   // when the current key/cert mismatch was first seen
}

// observe reads the files once, cert.pem first, as a service that reloads
// on a certificate change does. It returns the credentials when they are
// consistent; nil while none exist yet or while a write is in progress.
// key.pem is written before cert.pem: a new certificate must always come
// with its key already in place; the old certificate may be seen with the
// new key only while the new certificate is being written (bounded here at
// 2 s). Anything else is a failure.
func (w *agentWatch) observe() *creds {
	t := w.t
	t.Helper()
	if w.agent.exited() && !w.agent.stopped {
		t.Fatalf("the agent exited (%v):\n%s", w.agent.err, w.agent.log())
	}
	c, err := loadCreds(w.dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(w.seen) == 0:
		return nil
	case err != nil && c != nil: // key.pem does not match cert.pem
		if len(w.seen) == 0 || !w.seen[len(w.seen)-1].leaf.Equal(c.leaf) {
			t.Fatalf("a new certificate (serial %x) appeared in cert.pem without its key in key.pem", c.leaf.SerialNumber)
		}
		if w.mism.IsZero() {
			w.mism = time.Now()
		}
		if time.Since(w.mism) > 2*time.Second {
			t.Fatalf("key.pem has not matched cert.pem for %s: %v", time.Since(w.mism), err)
		}
		return nil
	case err != nil:
		t.Fatalf("reading the agent's files: %v", err)
	}
	w.mism = time.Time{}
	if c.keyMode != 0o600 {
		t.Errorf("key.pem mode %o, want 600", c.keyMode)
	}
	if got := spiffeIDOf(t, c.leaf); got != w.id {
		t.Errorf("cert.pem names %s, want %s", got, w.id)
	}
	if len(w.seen) == 0 || !w.seen[len(w.seen)-1].leaf.Equal(c.leaf) {
		verifyLeaf(t, c.leaf, c.chain, w.ca.pool())
		for _, s := range w.seen {
			if s.leaf.SerialNumber.Cmp(c.leaf.SerialNumber) == 0 {
				t.Errorf("serial %x came back", c.leaf.SerialNumber)
			}
		}
		w.seen = append(w.seen, c)
		w.at = append(w.at, time.Now())
	}
	return c
}

// next waits until a certificate other than the last one seen is in
// place, at the latest by deadline, and returns it.
func (w *agentWatch) next(deadline time.Time, what string) *creds {
	w.t.Helper()
	n := len(w.seen)
	for {
		w.observe()
		if len(w.seen) > n {
			return w.seen[len(w.seen)-1]
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("no new certificate by %s: %s (%d seen so far)", deadline.Format(time.RFC3339), what, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startAgent runs `agentca enroll --daemon` with a token file.
func startAgent(t *testing.T, ca *testCA, id, ttl string, extra ...string) (*proc, *agentWatch, string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "creds")
	tokFile := filepath.Join(dir, "token")
	writeFile(t, tokFile, []byte(ca.token(id)+"\n"))
	args := append([]string{"enroll", "--daemon", "--ca", ca.URL, "--root", ca.rootsFile(), "--token-file", tokFile,
		"--out", out, "--ttl", ttl}, extra...)
	logPath := filepath.Join(dir, "agent.log")
	agent := startProc(t, "agent", logPath, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent stderr (%s):\n%s", logPath, agent.log())
		}
	})
	return agent, &agentWatch{t: t, ca: ca, agent: agent, dir: out, id: id}, dir
}

// checkRenewalChain checks that the CA recorded exactly the certificates
// the watcher saw, each renewed (over mTLS) from the one before.
func checkRenewalChain(t *testing.T, ca *testCA, w *agentWatch) {
	t.Helper()
	recs := ca.certs(w.id)
	if len(recs) != len(w.seen) {
		t.Errorf("the CA issued %d certificates for %s, the agent's files showed %d", len(recs), w.id, len(w.seen))
	}
	for i := 1; i < len(w.seen); i++ {
		if !renewedFrom(recs, w.seen[i].leaf, w.seen[i-1].leaf) {
			t.Errorf("certificate %d (%x) is not recorded as renewed from %x", i, w.seen[i].leaf.SerialNumber, w.seen[i-1].leaf.SerialNumber)
		}
	}
}

// TestAgentDaemon runs `agentca enroll --daemon --ttl 1m`: it renews before
// expiry at least twice on its own, runs --on-renew after each renewal,
// renews at once on SIGHUP, and exits 0 on SIGTERM.
func TestAgentDaemon(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "10s"}})
	ca.start()
	const id = "spiffe://example.org/agent/daemon"
	hookFile := filepath.Join(t.TempDir(), "hook.log")
	agent, w, _ := startAgent(t, ca, id, "1m", "--on-renew", "echo $AGENTCA_SERIAL >> "+hookFile)

	first := w.next(time.Now().Add(30*time.Second), "the first enrollment")
	if life := first.leaf.NotAfter.Sub(first.leaf.NotBefore); life < time.Minute || life > 2*time.Minute {
		t.Fatalf("--ttl 1m gave a lifetime of %s", life)
	}
	// Two renewals on schedule, each before the previous certificate
	// expires and not in a hot loop (2/3 of a minute, give or take).
	for i := 1; i <= 2; i++ {
		prev := w.seen[len(w.seen)-1]
		c := w.next(prev.leaf.NotAfter, "a renewal before the certificate expires")
		seenAt := w.at[len(w.at)-1]
		if !seenAt.Before(prev.leaf.NotAfter) {
			t.Errorf("renewal %d seen at %s, after the old certificate expired at %s", i, seenAt, prev.leaf.NotAfter)
		}
		if gap := seenAt.Sub(w.at[len(w.at)-2]); gap < 20*time.Second {
			t.Errorf("renewal %d came %s after the previous certificate; want about 2/3 of its 1m lifetime", i, gap)
		}
		if samePublicKey(c.leaf.PublicKey, prev.leaf.PublicKey) {
			t.Errorf("renewal %d kept the key", i)
		}
	}

	// SIGHUP renews now, long before the next scheduled renewal.
	sent := time.Now()
	agent.signal(t, syscall.SIGHUP)
	w.next(sent.Add(10*time.Second), "a renewal right after SIGHUP")

	// --on-renew ran after each renewal, with that renewal's serial.
	want := serials(w.seen[1:])
	var lines []string
	eventually(t, 10*time.Second, 50*time.Millisecond, "--on-renew to have run for each renewal", func() bool {
		b, _ := os.ReadFile(hookFile)
		lines = normLines(t, string(b))
		return len(lines) >= len(want) && containsInOrder(lines, want)
	})
	all := serials(w.seen)
	count := map[string]int{}
	for _, l := range lines {
		count[l]++
		if !containsInOrder(all, []string{l}) {
			t.Errorf("--on-renew printed serial %s that was never in cert.pem (%v)", l, all)
		}
	}
	for serial, n := range count {
		if n > 1 {
			t.Errorf("--on-renew ran %d times for the certificate with serial %s; want once per new certificate (output %v)", n, serial, lines)
		}
	}
	agent.stop(t)
	w.observe() // the files are still consistent after the agent stopped
	onlyCredFiles(t, w.dir)
	checkRenewalChain(t, ca, w)
}

// TestAgentDaemonSurvivesCAOutage stops the CA around the agent's renewal
// time for longer than one retry, starts it again on the same ports, and
// checks the agent renews before its certificate expires.
func TestAgentDaemonSurvivesCAOutage(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "10s"}})
	ca.start()
	const id = "spiffe://example.org/agent/outage"
	agent, w, _ := startAgent(t, ca, id, "30s")

	first := w.next(time.Now().Add(30*time.Second), "the first enrollment")
	got := w.at[0]
	// The agent renews at 2/3 of the remaining lifetime, ±10%: stop the
	// CA shortly before the earliest moment.
	earliest := got.Add(time.Duration(float64(first.leaf.NotAfter.Sub(got)) * 2 / 3 * 0.9))
	waitUntil(earliest.Add(-1500 * time.Millisecond))
	w.observe()
	if len(w.seen) != 1 {
		t.Fatalf("the agent renewed at %s, earlier than 2/3 of its lifetime", w.at[1])
	}
	ca.stop()
	down := time.Now()

	// The renewal and at least one retry fail while the CA is down.
	eventually(t, time.Until(first.leaf.NotAfter.Add(-4*time.Second)), 100*time.Millisecond,
		"the agent to log two failed renewal attempts while the CA is down", func() bool {
			w.observe()
			return strings.Count(agent.log(), "renewal failed") >= 2
		})
	waitUntil(down.Add(5 * time.Second))
	w.observe()
	if len(w.seen) != 1 {
		t.Fatalf("a new certificate appeared while the CA was down")
	}
	ca.start()
	t.Logf("CA down for %s; the certificate expires in %s", time.Since(down).Round(time.Millisecond), time.Until(first.leaf.NotAfter).Round(time.Millisecond))

	w.next(first.leaf.NotAfter, "a renewal after the CA came back, before the certificate expires")
	if at := w.at[1]; !at.Before(first.leaf.NotAfter) {
		t.Errorf("renewed at %s, after expiry at %s", at, first.leaf.NotAfter)
	}
	agent.stop(t)
	checkRenewalChain(t, ca, w)
}

func serials(cs []*creds) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.leaf.SerialNumber.Text(16)
	}
	return out
}

// normLines parses one hex serial per line.
func normLines(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		n, ok := new(big.Int).SetString(l, 16)
		if !ok {
			t.Fatalf("--on-renew output %q is not a hex serial", l)
		}
		out = append(out, n.Text(16))
	}
	return out
}

// containsInOrder reports whether want is a subsequence of have.
func containsInOrder(have, want []string) bool {
	i := 0
	for _, h := range have {
		if i < len(want) && h == want[i] {
			i++
		}
	}
	return i == len(want)
}
