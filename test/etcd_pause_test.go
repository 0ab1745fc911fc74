package test

import (
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestEtcdPausedReplica: a replica frozen (SIGSTOP) while certificates it
// has answered "good" for are revoked through another replica must not
// answer "good" for them after it resumes: its first answers are revoked
// or tryLater (it cannot prove it has seen every revocation until its
// watch catches up), and within a second all are revoked.
func TestEtcdPausedReplica(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	hc := a.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	const n = 16
	toks := logE2ETokens(t, a, "spiffe://example.org/agent/paused", n)
	issued := make([]*logE2EIssued, n)
	for i, tok := range toks {
		issued[i] = etcdSign(t, hc, a, tok)
		if resp, err := etcdOCSP(hc, b, issued[i].leaf, etcdIssuerOf(t, issued[i])); err != nil || resp.Status != ocsp.Good {
			t.Fatalf("B's OCSP before the pause: %+v, %v", resp, err) // now cached by B
		}
	}

	b.mu.Lock()
	bp := b.proc
	b.mu.Unlock()
	bp.signal(t, syscall.SIGSTOP)
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			bp.signal(t, syscall.SIGCONT)
		}
	}()
	for _, is := range issued {
		mustRun(t, "revoke", "--dir", a.Dir, "--serial", is.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	}
	// Paused well past ocsp.max_staleness (1s).
	time.Sleep(time.Until(paused.Add(1500 * time.Millisecond)))
	bp.signal(t, syscall.SIGCONT)
	resumed = true

	// Every serial asked at once, as relying services would.
	var wg sync.WaitGroup
	for _, is := range issued {
		wg.Go(func() {
			resp, err := etcdOCSP(hc, b, is.leaf, etcdIssuerOf(t, is))
			var re ocsp.ResponseError
			switch {
			case err == nil && resp.Status == ocsp.Revoked:
			case errors.As(err, &re) && re.Status == ocsp.TryLater:
			default:
				t.Errorf("B's first answer after SIGCONT for %s (revoked while B was paused): %+v, %v; want revoked or tryLater",
					is.leaf.SerialNumber.Text(16), resp, err)
			}
		})
	}
	wg.Wait()
	resumedAt := time.Now()
	eventually(t, 5*time.Second, 20*time.Millisecond, "B to answer revoked for every serial", func() bool {
		for _, is := range issued {
			if resp, err := etcdOCSP(hc, b, is.leaf, etcdIssuerOf(t, is)); err != nil || resp.Status != ocsp.Revoked {
				return false
			}
		}
		return true
	})
	if d := time.Since(resumedAt); d > time.Second {
		t.Errorf("B answered revoked for all %d serials %s after resuming, want within 1s", n, d)
	}
}
