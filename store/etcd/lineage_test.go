package etcd_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd/etcdtest"
)

// renewalOf is an issuance renewing parent onto key.
func renewalOf(t *testing.T, parent *store.Certificate, key string) *store.Issuance {
	t.Helper()
	c, l := logged(t)
	c.PublicKeySHA256, c.RenewedFrom = key, parent.Serial
	return &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
}

func issueKeyed(t *testing.T, s store.Store, key string) *store.Certificate {
	t.Helper()
	c, l := logged(t)
	c.PublicKeySHA256 = key
	iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
	if err := s.Issue(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	return &iss.Certificate
}

// TestRenewRevokeRaceTwoReplicas: renewals on one replica race the
// revocations of their parents on the other; no child is ever recorded
// after its parent's revocation (each one recorded is revoked), and
// replica a's watch reports every certificate revoked, descendants
// included.
func TestRenewRevokeRaceTwoReplicas(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/lin", 5*time.Second), open(t, cluster, "/lin", 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	watched := map[string]bool{}
	go a.Watch(ctx, func(c store.Change) {
		if c.Kind == store.ChangeRevoked && c.Revoked != nil {
			mu.Lock()
			watched[c.Revoked.Serial] = true
			mu.Unlock()
		}
	})
	const n = 32
	parents := make([]*store.Certificate, n)
	for i := range parents {
		parents[i] = issueKeyed(t, a, "p")
	}
	children := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		renewer, revoker := a, b
		if i%2 == 1 {
			renewer, revoker = b, a
		}
		wg.Go(func() {
			ren := renewalOf(t, parents[i], "c")
			if err := renewer.Issue(context.Background(), ren); err == nil {
				children[i] = ren.Certificate.Serial
			} else if !errors.Is(err, store.ErrRevoked) {
				t.Errorf("renewal %d: %v", i, err)
			}
		})
		wg.Go(func() {
			if _, err := revoker.Revoke(context.Background(), parents[i].Serial, 1, now); err != nil {
				t.Errorf("revoke %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	var revoked []string
	for i, c := range children {
		revoked = append(revoked, parents[i].Serial)
		if c == "" {
			continue
		}
		rec, err := b.Certificate(context.Background(), c)
		if err != nil || !rec.Revoked() {
			t.Fatalf("renewal %d recorded after its parent's revocation: %+v, %v", i, rec, err)
		}
		revoked = append(revoked, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range revoked {
		for {
			mu.Lock()
			ok := watched[s]
			mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the watch never reported the revocation of %s", s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestRenewalReusedAcrossReplicas: a renewal on one replica, a second one
// onto another key on the other: refused there, and the lineage revoked.
func TestRenewalReusedAcrossReplicas(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/lin", 5*time.Second), open(t, cluster, "/lin", 5*time.Second)
	ctx := context.Background()
	parent := issueKeyed(t, a, "k0")
	ren := renewalOf(t, parent, "k1")
	if err := a.Issue(ctx, ren); err != nil {
		t.Fatal(err)
	}
	// The honest retry through the other replica gets the same child.
	var prev *store.AlreadyIssuedError
	if err := b.Issue(ctx, renewalOf(t, parent, "k1")); !errors.As(err, &prev) || prev.Certificate.Serial != ren.Certificate.Serial {
		t.Fatalf("retry on the other replica: %v, want the child %s", err, ren.Certificate.Serial)
	}
	var re *store.RenewalReusedError
	if err := b.Issue(ctx, renewalOf(t, parent, "k2")); !errors.As(err, &re) || re.Err != nil || len(re.Revoked) != 2 {
		t.Fatalf("second renewal onto another key: %v, want the lineage (2) revoked", err)
	}
	for _, s := range []string{parent.Serial, ren.Certificate.Serial} {
		rec, err := a.Certificate(ctx, s)
		if err != nil || !rec.Revoked() || rec.RevocationReason != store.KeyCompromise {
			t.Fatalf("%s: %+v, %v; want revoked keyCompromise", s, rec, err)
		}
	}
}

// TestImportKeepsLineage: a bbolt file's renewals hold after a
// migration: a retry gets the child, another key is refused as reuse.
func TestImportKeepsLineage(t *testing.T) {
	ctx := context.Background()
	src, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	parent := issueKeyed(t, src, "k0")
	ren := renewalOf(t, parent, "k1")
	if err := src.Issue(ctx, ren); err != nil {
		t.Fatal(err)
	}
	cluster := etcdtest.New(t, 1)
	dst := open(t, cluster, "/imp", 0)
	if _, err := dst.Import(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.FinishImport(ctx); err != nil {
		t.Fatal(err)
	}
	var prev *store.AlreadyIssuedError
	if err := dst.Issue(ctx, renewalOf(t, parent, "k1")); !errors.As(err, &prev) || prev.Certificate.Serial != ren.Certificate.Serial {
		t.Fatalf("retry after the migration: %v, want the child %s", err, ren.Certificate.Serial)
	}
	if err := dst.Issue(ctx, renewalOf(t, parent, "k2")); !errors.Is(err, store.ErrRenewalReused) {
		t.Fatalf("another key after the migration: %v, want ErrRenewalReused", err)
	}
}
