package api

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// cacheStore is a bbolt file holding n unrevoked certificate records.
func cacheStore(t *testing.T, n int) (*bolt.Store, []string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	var serials []string
	for i := range n {
		sn := fmt.Sprintf("%04x", 0x1000+i)
		c := store.Certificate{Serial: sn, IssuerSKI: strings.Repeat("ab", 20), SPIFFEID: fmt.Sprintf("spiffe://example.org/c/%d", i), Provisioner: "join",
			NotBefore: now, NotAfter: now.Add(time.Hour), DER: []byte(sn)}
		if err := st.Issue(context.Background(), &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
		serials = append(serials, sn)
	}
	return st, serials
}

// revoke revokes sn in st and tells c, as the revocation service's
// Direct notifier does: after the store's write.
func revoke(t *testing.T, st *bolt.Store, c *ClientCerts, sn string) {
	t.Helper()
	rec, err := st.Revoke(context.Background(), sn, 1, time.Now())
	if err != nil {
		t.Error(err)
		return
	}
	c.Revoked(context.Background(), rec)
}

// TestClientCertsRevokedDuringRead: a revocation that lands between the
// store read of an unrevoked record and its insertion leaves nothing in
// the cache; the next read sees the revocation. A revocation of another
// serial meanwhile costs the insertion too (one generation for all), and
// a Forget (the watch's resync) does as well.
func TestClientCertsRevokedDuringRead(t *testing.T) {
	st, sns := cacheStore(t, 3)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		event func(c *ClientCerts)
	}{
		{"revoked itself", func(c *ClientCerts) { revoke(t, st, c, sns[0]) }},
		{"another revoked", func(c *ClientCerts) { revoke(t, st, c, sns[1]) }},
		{"resync", func(c *ClientCerts) { c.Forget() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClientCerts(16, nil)
			read := func(ctx context.Context, sn string) (*store.Certificate, error) {
				rec, err := st.Certificate(ctx, sn)
				if tc.event != nil {
					tc.event(c) // between the read and the insertion
					tc.event = nil
				}
				return rec, err
			}
			rec, err := c.record(ctx, sns[2], read)
			if err != nil || rec.Revoked() {
				t.Fatalf("first read: %+v %v", rec, err)
			}
			if c.Len() != 0 {
				t.Fatalf("a record read across a revocation was cached (%d held)", c.Len())
			}
		})
	}
	// The serial revoked above is read again, revoked, and not cached.
	c := NewClientCerts(16, nil)
	rec, err := c.record(ctx, sns[0], st.Certificate)
	if err != nil || !rec.Revoked() || c.Len() != 0 {
		t.Fatalf("revoked record: %+v %v, %d cached", rec, err, c.Len())
	}
	// With no revocation meanwhile the record is kept, and served
	// without reading the store.
	if _, err := c.record(ctx, sns[2], st.Certificate); err != nil || c.Len() != 1 {
		t.Fatalf("unrevoked record not cached: %v, %d", err, c.Len())
	}
	fail := func(context.Context, string) (*store.Certificate, error) {
		return nil, fmt.Errorf("the store was read")
	}
	if rec, err := c.record(ctx, sns[2], fail); err != nil || rec.Serial != sns[2] {
		t.Fatalf("cached record: %+v %v", rec, err)
	}
	// Not found is not cached.
	if _, err := c.record(ctx, "7fff", st.Certificate); err == nil || c.Len() != 1 {
		t.Fatalf("unknown serial: %v, %d cached", err, c.Len())
	}
}

// TestClientCertsConcurrentRevocations: readers hammer the cache over a
// bbolt file while every record is revoked; once a revocation has
// returned, no read returns that record unrevoked.
func TestClientCertsConcurrentRevocations(t *testing.T) {
	st, sns := cacheStore(t, 32)
	c := NewClientCerts(64, nil)
	ctx := context.Background()
	var done [32]atomic.Bool // done[i]: sns[i]'s revocation returned
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stale atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % len(sns)
				was := done[k].Load()
				rec, err := c.record(ctx, sns[k], st.Certificate)
				if err != nil {
					t.Error(err)
					return
				}
				if was && !rec.Revoked() {
					stale.Add(1)
				}
			}
		})
	}
	for i, sn := range sns {
		time.Sleep(time.Millisecond)
		revoke(t, st, c, sn)
		done[i].Store(true)
	}
	time.Sleep(5 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := stale.Load(); n > 0 {
		t.Fatalf("%d reads returned a record unrevoked after its revocation", n)
	}
	if c.Len() != 0 {
		t.Fatalf("%d records still cached after every one was revoked", c.Len())
	}
}

// TestClientCertsBounded: the cache never holds more than its size; a
// record read again survives the turnover.
func TestClientCertsBounded(t *testing.T) {
	st, sns := cacheStore(t, 40)
	c := NewClientCerts(8, nil)
	ctx := context.Background()
	for _, sn := range sns {
		if _, err := c.record(ctx, sn, st.Certificate); err != nil {
			t.Fatal(err)
		}
		if _, err := c.record(ctx, sns[0], st.Certificate); err != nil { // kept warm
			t.Fatal(err)
		}
		if c.Len() > 8 {
			t.Fatalf("%d records held, over the bound of 8", c.Len())
		}
	}
	fail := func(context.Context, string) (*store.Certificate, error) {
		return nil, fmt.Errorf("the store was read")
	}
	if _, err := c.record(ctx, sns[0], fail); err != nil {
		t.Fatalf("the record read at every step was evicted: %v", err)
	}
	if _, err := c.record(ctx, sns[1], fail); err == nil {
		t.Fatal("an old record was not evicted")
	}
}

// TestClientCertsStale: while fresh says no (an etcd replica whose watch
// is not proven up to date), every read goes to the store and nothing is
// kept; once fresh again the cache is used.
func TestClientCertsStale(t *testing.T) {
	st, sns := cacheStore(t, 1)
	var fresh atomic.Bool
	c := NewClientCerts(8, fresh.Load)
	ctx := context.Background()
	if _, err := c.record(ctx, sns[0], st.Certificate); err != nil || c.Len() != 0 {
		t.Fatalf("stale: %v, %d cached", err, c.Len())
	}
	fresh.Store(true)
	if _, err := c.record(ctx, sns[0], st.Certificate); err != nil || c.Len() != 1 {
		t.Fatalf("fresh: %v, %d cached", err, c.Len())
	}
	// A revocation the watch has not brought: stale, so the store is
	// read and says revoked, though the cache still holds the record.
	if _, err := st.Revoke(ctx, sns[0], 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	fresh.Store(false)
	if rec, err := c.record(ctx, sns[0], st.Certificate); err != nil || !rec.Revoked() {
		t.Fatalf("stale read served %+v %v; want the store's revoked record", rec, err)
	}
}

// BenchmarkClientCertRecord is the record lookup of one client
// certificate check: read from the bbolt file and decoded (store), or
// from the cache (cache).
func BenchmarkClientCertRecord(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	der := make([]byte, 640) // an ECDSA P-256 leaf with a SPIFFE ID is about this size
	for i := range der {
		der[i] = byte(i)
	}
	rec := store.Certificate{Serial: "3f2a9c0e1d4b5a69788796a5b4c3d2e1f0a1b2c3", IssuerSKI: strings.Repeat("ab", 20),
		SPIFFEID: "spiffe://example.org/ns/prod/sa/agent", Provisioner: "k8s", NotBefore: now, NotAfter: now.Add(time.Hour),
		DER: der, PublicKeySHA256: strings.Repeat("cd", 32), Claims: map[string]string{"namespace": "prod", "service_account": "agent", "pod": "agent-7c9f"}}
	if err := st.Issue(context.Background(), &store.Issuance{Certificate: rec, Now: now}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		c    *ClientCerts
	}{{"store", nil}, {"cache", NewClientCerts(0, nil)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := bc.c.record(ctx, rec.Serial, st.Certificate); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
