package test

import (
	"context"
	"crypto/x509"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store/etcd/etcdtest"
	"golang.org/x/crypto/ocsp"
)

// faultLoad issues certificates through replicas from workers until
// stopped, recording when each issuance succeeded.
type faultLoad struct {
	mu     sync.Mutex
	ok     []time.Time
	failed int
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startFaultLoad(t *testing.T, cas []*testCA, toks []string, workers int) *faultLoad {
	l := &faultLoad{stop: make(chan struct{})}
	next := make(chan string, len(toks))
	for _, tok := range toks {
		next <- tok
	}
	close(next)
	hc := cas[0].client(nil)
	hc.Timeout = 15 * time.Second
	csr := csrPEM(t, newECKey(t), &x509.CertificateRequest{})
	for w := range workers {
		l.wg.Go(func() {
			c := cas[w%len(cas)]
			for tok := range next {
				select {
				case <-l.stop:
					return
				default:
				}
				_, err := logE2ESign(hc, c, tok, csr)
				l.mu.Lock()
				if err != nil {
					l.failed++
				} else {
					l.ok = append(l.ok, time.Now())
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *faultLoad) end() {
	close(l.stop)
	l.wg.Wait()
}

// gap is the longest time without a successful issuance between from and
// to.
func (l *faultLoad) gap(from, to time.Time) time.Duration {
	l.mu.Lock()
	ts := append([]time.Time(nil), l.ok...)
	l.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	last, longest := from, time.Duration(0)
	for _, t := range ts {
		if t.Before(from) || t.After(to) {
			continue
		}
		longest = max(longest, t.Sub(last))
		last = t
	}
	return max(longest, to.Sub(last))
}

func (l *faultLoad) count() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ok), l.failed
}

// TestEtcdFaults: two replicas issue under load on a 3-member etcd
// cluster whose members are processes; a follower, then the leader, is
// frozen (SIGSTOP) for a while and resumed. Issuance must go on: the
// longest time without any certificate issued, from the fault on, is
// bounded well below the request timeout.
func TestEtcdFaults(t *testing.T) {
	cluster := etcdtest.StartProcesses(t, 3, etcdtest.Options{})
	cas := startEtcdReplicas(t, 2, cluster.Endpoints())
	toks := logE2ETokens(t, cas[0], "spiffe://example.org/agent/faults", 20000)
	spare := toks[len(toks)-10:]
	load := startFaultLoad(t, cas, toks[:len(toks)-10], 8)
	defer load.end()
	hc := cas[0].client(nil)
	hc.Timeout = 15 * time.Second
	ctx := context.Background()
	const frozen = 15 * time.Second
	for _, which := range []string{"follower", "leader"} {
		time.Sleep(time.Second)
		leader, err := cluster.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		victim := leader
		if which == "follower" {
			victim = (leader + 1) % 3
		}
		before, _ := load.count()
		at := time.Now()
		if err = cluster.Pause(victim); err != nil {
			t.Fatal(err)
		}
		unready := watchReady(cas, frozen)
		// A revocation through the admin socket and an OCSP answer
		// for it, during the fault.
		time.Sleep(frozen / 4)
		var is *logE2EIssued
		for i := 0; is == nil; i++ {
			// A request caught on the frozen member is refused (503,
			// its token may be spent): the next one goes elsewhere.
			is, err = logE2ESign(hc, cas[1], spare[0], csrPEM(t, newECKey(t), &x509.CertificateRequest{}))
			spare = spare[1:]
			if err != nil && i == 2 {
				t.Fatalf("with the %s frozen: %v", which, err)
			}
		}
		r0 := time.Now()
		mustRun(t, "revoke", "--dir", cas[0].Dir, "--serial", is.leaf.SerialNumber.Text(16))
		if d := time.Since(r0); d > 2*time.Second {
			t.Errorf("with the %s frozen, a revocation took %s", which, d.Round(time.Millisecond))
		}
		eventually(t, 2*time.Second, 20*time.Millisecond, "OCSP through the other replica to say revoked with the "+which+" frozen", func() bool {
			resp, err := etcdOCSP(hc, cas[1], is.leaf, etcdIssuerOf(t, is))
			return err == nil && resp.Status == ocsp.Revoked
		})
		time.Sleep(time.Until(at.Add(frozen)))
		if err := cluster.Resume(victim); err != nil {
			t.Fatal(err)
		}
		// /ready says 503 after 3 s without a proof of freshness: one
		// member frozen must not get a replica dropped by a balancer
		// (which wants a few failed checks in a row).
		for i, d := range <-unready {
			if d > 2*time.Second {
				t.Errorf("with the %s frozen, replica %d answered /ready with 503 (for %s in a row)", which, i, d.Round(time.Millisecond))
			}
		}
		time.Sleep(time.Second)
		after, failed := load.count()
		g := load.gap(at, at.Add(frozen))
		t.Logf("%s m%d frozen for %s: %d issued during and after, longest gap %s, %d failed so far", which, victim, frozen, after-before, g.Round(time.Millisecond), failed)
		// Measured about 1 s (storage.attempt_timeout); the bound
		// leaves room for a busy CI machine.
		if g > 2500*time.Millisecond {
			t.Errorf("freezing the %s stopped issuance for %s, want at most 2.5s", which, g.Round(time.Millisecond))
		}
	}
	n, failed := load.count()
	if n == 0 {
		t.Fatal("nothing issued")
	}
	t.Logf("issued %d, failed %d (answered 503: their requests were in flight on the frozen member)", n, failed)
}

// watchReady polls every replica's /ready for d and sends, per replica,
// the longest run of answers other than 200.
func watchReady(cas []*testCA, d time.Duration) <-chan []time.Duration {
	out := make(chan []time.Duration, 1)
	go func() {
		hc := cas[0].client(nil)
		hc.Timeout = time.Second
		defer hc.CloseIdleConnections()
		longest := make([]time.Duration, len(cas))
		since := make([]time.Time, len(cas))
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			for i, c := range cas {
				r, err := tryDo(hc, http.MethodGet, "http://"+c.HTTP+"/ready", "", nil)
				switch {
				case err == nil && r.status == http.StatusOK:
					since[i] = time.Time{}
				case since[i].IsZero():
					since[i] = time.Now()
					longest[i] = max(longest[i], time.Nanosecond)
				default:
					longest[i] = max(longest[i], time.Since(since[i]))
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		out <- longest
	}()
	return out
}

// TestEtcdReplicaRejoins: a third replica is stopped and started again ten
// times while two others issue at full load; it starts every time (its
// start-up reads the log and its tree head at one revision, so another
// replica's commit between two reads is not taken for a loss) and issues.
func TestEtcdReplicaRejoins(t *testing.T) {
	cluster := etcdtest.StartProcesses(t, 3, etcdtest.Options{})
	cas := startEtcdReplicas(t, 3, cluster.Endpoints())
	toks := logE2ETokens(t, cas[0], "spiffe://example.org/agent/rejoin", 20000)
	spare, busy := toks[:10], toks[10:]
	load := startFaultLoad(t, cas[:2], busy, 8)
	defer load.end()
	hc := cas[0].client(nil)
	hc.Timeout = 15 * time.Second
	c := cas[2]
	for i := range 10 {
		c.stop()
		before, _ := load.count()
		c.start() // fails the test if serve exits
		if after, _ := load.count(); after == before {
			t.Errorf("restart %d: nothing issued by the others while it started", i+1)
		}
		if _, err := logE2ESign(hc, c, spare[i], csrPEM(t, newECKey(t), &x509.CertificateRequest{})); err != nil {
			t.Fatalf("restart %d: the rejoined replica does not issue: %v", i+1, err)
		}
	}
	n, failed := load.count()
	t.Logf("10 restarts under load: %d issued by the other replicas, %d failed", n, failed)
}
