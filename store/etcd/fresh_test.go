package etcd_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
)

// TestFreshAt: while Watch runs, FreshAt keeps moving; once it has passed
// the moment another replica revoked a certificate, the Watch callback has
// already seen that revocation; with the cluster's quorum gone, it stops
// moving.
func TestFreshAt(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member cluster")
	}
	cluster := etcdtest.New(t, 3)
	a := open(t, cluster, "/f", time.Second)
	b, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/f", MaxTxnOps: 1024,
		RequestTimeout: time.Second, ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if !b.FreshAt().IsZero() {
		t.Fatal("FreshAt before any Watch is not zero")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	seen := map[string]bool{}
	go func() {
		_ = b.Watch(ctx, func(c store.Change) {
			if c.Kind == store.ChangeRevoked {
				mu.Lock()
				seen[c.Revoked.Serial] = true
				mu.Unlock()
			}
		})
	}()
	started := time.Now()
	waitFresh(t, b, started)

	for range 5 {
		c, l := logged(t)
		if err := a.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Revoke(ctx, c.Serial, 1, now); err != nil {
			t.Fatal(err)
		}
		revoked := time.Now()
		waitFresh(t, b, revoked)
		mu.Lock()
		ok := seen[c.Serial]
		mu.Unlock()
		if !ok {
			t.Fatalf("FreshAt passed the revocation of %s before the watch applied it", c.Serial)
		}
	}

	// No quorum: no proof of freshness.
	cluster.Stop(1)
	cluster.Stop(2)
	stopped := time.Now()
	time.Sleep(time.Second)
	if at := b.FreshAt(); at.After(stopped) {
		t.Fatalf("FreshAt %s moved past the loss of quorum at %s", at, stopped)
	}
}

func waitFresh(t *testing.T, s *etcd.Store, after time.Time) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !s.FreshAt().After(after) {
		if time.Now().After(deadline) {
			t.Fatalf("FreshAt %s never passed %s", s.FreshAt(), after)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
