package revocation_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
)

var now = time.Now().UTC().Truncate(time.Second)

// told counts what the caches were told, by serial.
type told struct {
	mu sync.Mutex
	n  map[string]int
}

func newTold() *told { return &told{n: map[string]int{}} }

func (c *told) Revoked(_ context.Context, rec *store.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[rec.Serial]++
}

func (c *told) count(serial string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[serial]
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// issueChain records a certificate and one renewed from it.
func issueChain(t *testing.T, st store.Store, task string) (parent, child store.Certificate) {
	t.Helper()
	mk := func(from string) store.Certificate {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		b[0] = b[0]&0x7f | 1
		c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
			NotBefore: now, NotAfter: now.Add(time.Hour), DER: append([]byte{0x30, 0x81}, b...), RenewedFrom: from, Task: task,
			PublicKeySHA256: hex.EncodeToString(b)}
		if err := st.Issue(context.Background(), &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	parent = mk("")
	return parent, mk(parent.Serial)
}

// TestDirectOnBolt: on a store no other process writes, a revocation
// reaches the caches once per record, before Revoke returns; a repeated
// revocation tells them nothing new; one audit line per record, the
// descendant's naming its cause; a task end revokes each certificate once.
func TestDirectOnBolt(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	caches, logs := newTold(), &lockedBuffer{}
	svc, err := revocation.New(revocation.Options{Store: st, Notifier: revocation.Direct(caches), Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	parent, child := issueChain(t, st, "")
	recs, err := svc.Revoke(ctx, revocation.Request{Serial: parent.Serial, Reason: 1, At: now, By: "admin-socket", Remote: "@"})
	if err != nil || len(recs) != 2 {
		t.Fatalf("Revoke: %d records, %v; want 2", len(recs), err)
	}
	for _, s := range []string{parent.Serial, child.Serial} {
		if n := caches.count(s); n != 1 {
			t.Errorf("caches told of %s %d times, want 1", s, n)
		}
	}
	if !strings.Contains(logs.String(), `"op":"revoke","serial":"`+child.Serial+`"`) ||
		!strings.Contains(logs.String(), `"lineage_of":"`+parent.Serial+`"`) {
		t.Errorf("audit lines lack the descendant's revocation:\n%s", logs)
	}
	if _, err := svc.Revoke(ctx, revocation.Request{Serial: parent.Serial, Reason: 1, At: now.Add(time.Second), By: "admin-socket"}); err != nil {
		t.Fatal(err)
	}
	if n := caches.count(parent.Serial); n != 1 {
		t.Errorf("a repeated revocation told the caches again (%d times)", n)
	}

	a, b := issueChain(t, st, "job-1")
	end, err := svc.EndTask(ctx, "job-1", 5, now, "@")
	if err != nil || len(end.Serials) != 2 {
		t.Fatalf("EndTask: %+v, %v; want both certificates", end, err)
	}
	for _, s := range []string{a.Serial, b.Serial} {
		if n := caches.count(s); n != 1 {
			t.Errorf("task end: caches told of %s %d times, want 1", s, n)
		}
		if n := strings.Count(logs.String(), `"serial":"`+s+`"`); n != 1 {
			t.Errorf("task end: %d audit lines for %s, want 1", n, s)
		}
	}
	if !strings.Contains(logs.String(), `"op":"task_end","task":"job-1","revoked":2`) {
		t.Errorf("no task_end audit line:\n%s", logs)
	}
}

// TestFeedOnEtcd: on a store replicas share, a revocation reaches each
// replica's caches once, through the store's watch, the replica that made
// it included, and Revoke returns only after its caches have it.
func TestFeedOnEtcd(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type replica struct {
		st     *etcd.Store
		caches *told
		feed   *revocation.Feed
		done   chan struct{}
	}
	var reps []*replica
	for range 2 {
		st, err := etcd.Open(ctx, etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/rev", MaxTxnOps: 1024})
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{st: st, caches: newTold(), done: make(chan struct{})}
		r.feed = revocation.NewFeed(r.caches)
		go func() {
			defer close(r.done)
			_ = st.Watch(ctx, func(c store.Change) {
				if c.Kind == store.ChangeRevoked {
					r.feed.Deliver(ctx, c.Revoked)
				}
			})
		}()
		t.Cleanup(func() { cancel(); <-r.done; st.Close() })
		reps = append(reps, r)
	}
	svc, err := revocation.New(revocation.Options{Store: reps[0].st, Notifier: reps[0].feed})
	if err != nil {
		t.Fatal(err)
	}
	parent, child := issueChain(t, reps[0].st, "")
	if _, err := svc.Revoke(ctx, revocation.Request{Serial: parent.Serial, Reason: 1, At: now, By: "admin-socket"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{parent.Serial, child.Serial} {
		if n := reps[0].caches.count(s); n != 1 {
			t.Errorf("the revoking replica's caches were told of %s %d times when Revoke returned, want 1", s, n)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for reps[1].caches.count(child.Serial) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for a second delivery, were there one
	for _, r := range reps {
		for _, s := range []string{parent.Serial, child.Serial} {
			if n := r.caches.count(s); n != 1 {
				t.Errorf("caches told of %s %d times, want 1", s, n)
			}
		}
	}
}
