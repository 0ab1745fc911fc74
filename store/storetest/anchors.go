package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
)

var anchorTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"AnchorsEmpty", testAnchorsEmpty},
	{"AnchorsUpdate", testAnchorsUpdate},
	{"AnchorsConcurrent", testAnchorsConcurrent},
	{"IssuerStats", testIssuerStats},
	{"ListByTask", testListByTask},
	{"TaskEnded", testTaskEnded},
}

func testAnchorsEmpty(t *testing.T, s store.Store) {
	set, err := s.Anchors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 0 || len(set.Anchors) != 0 {
		t.Fatalf("empty store has anchors %+v", set)
	}
}

func testAnchorsUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := store.Anchor{ID: "a1", State: store.AnchorActive, Root: []byte{1}, Issuer: []byte{2}, IssuerSKI: "aa",
		RootKey: "keys/root.key", IssuerKey: "keys/issuing.key", StagedAt: now, ActivatedAt: now}
	got, err := s.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		set.Anchors = append(set.Anchors, a)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Sequence != 1 || len(got.Anchors) != 1 {
		t.Fatalf("after one update: %+v", got)
	}
	refused := errors.New("no")
	if _, err := s.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		set.Anchors[0].State = store.AnchorRetired
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("fn's error: got %v", err)
	}
	set, err := s.Anchors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 1 || len(set.Anchors) != 1 || set.Anchors[0].State != store.AnchorActive {
		t.Fatalf("a refused update changed the anchors: %+v", set)
	}
	b := set.Anchors[0]
	if b.ID != a.ID || string(b.Root) != string(a.Root) || b.IssuerKey != a.IssuerKey || !b.ActivatedAt.Equal(now) || !b.RetiredAt.IsZero() {
		t.Fatalf("stored anchor %+v, want %+v", b, a)
	}
	if set.Active() == nil || set.Active().ID != "a1" || set.Find("a1") == nil || set.Find("x") != nil {
		t.Fatal("Active/Find")
	}
}

// testAnchorsConcurrent: concurrent read-modify-write updates all land.
func testAnchorsConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := s.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
				set.Anchors = append(set.Anchors, store.Anchor{ID: fmt.Sprint(i), State: store.AnchorStaged, StagedAt: now})
				return nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	set, err := s.Anchors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != n || len(set.Anchors) != n {
		t.Fatalf("after %d concurrent updates: sequence %d, %d anchors", n, set.Sequence, len(set.Anchors))
	}
}

func testIssuerStats(t *testing.T, s store.Store) {
	ctx := context.Background()
	mk := func(ski string, notAfter time.Time) store.Certificate {
		c := cert(t, "spiffe://example.org/x")
		c.IssuerSKI, c.NotAfter = ski, notAfter
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	mk("0a", now.Add(-time.Minute))
	mk("0a", now.Add(2*time.Minute))
	last := mk("0a", now.Add(9*time.Minute))
	mk("0b", now.Add(30*time.Minute))
	if _, err := s.Revoke(ctx, last.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	st, err := s.IssuerStats(ctx, "0a", now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Unexpired != 2 || !st.LastNotAfter.Equal(now.Add(9*time.Minute)) {
		t.Fatalf("IssuerStats(old) = %+v, want 2 unexpired, last %v", st, now.Add(9*time.Minute))
	}
	if c := st.ByProvisioner["join"]; len(st.ByProvisioner) != 1 || c.Unexpired != 2 || !c.LastNotAfter.Equal(now.Add(9*time.Minute)) {
		t.Fatalf("IssuerStats(old).ByProvisioner = %+v", st.ByProvisioner)
	}
	st, err = s.IssuerStats(ctx, "0a", now.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if st.Unexpired != 0 || !st.LastNotAfter.IsZero() {
		t.Fatalf("IssuerStats(old) after expiry = %+v", st)
	}
	if st, err := s.IssuerStats(ctx, "0c", now); err != nil || st.Unexpired != 0 {
		t.Fatalf("IssuerStats(none) = %+v, %v", st, err)
	}
}

func testListByTask(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 9 {
		c := cert(t, "spiffe://example.org/a")
		if i%3 == 0 {
			c.Task = "task-1"
			want[c.Serial] = true
		} else if i%3 == 1 {
			c.Task = "task-2"
		}
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListCertificates(ctx, store.ListOptions{Task: "task-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("task-1 lists %d certificates, want %d", len(got), len(want))
	}
	for _, c := range got {
		if !want[c.Serial] || c.Task != "task-1" {
			t.Fatalf("unexpected certificate %s (task %q)", c.Serial, c.Task)
		}
	}
}

// testTaskEnded: after EndTask, no certificate naming the task is
// recorded; other tasks and certificates without one are not affected.
func testTaskEnded(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := cert(t, "spiffe://example.org/a")
	c.Task = "ticket-1"
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // ending twice is fine
		if err := s.EndTask(ctx, "ticket-1", now); err != nil {
			t.Fatalf("EndTask: %v", err)
		}
	}
	again := cert(t, "spiffe://example.org/a")
	again.Task = "ticket-1"
	tok := newToken(t, s, "spiffe://example.org/a", time.Hour)
	if err := s.Issue(ctx, &store.Issuance{Certificate: again, Now: now, JoinToken: tok}); !errors.Is(err, store.ErrTaskEnded) {
		t.Fatalf("Issue for an ended task: %v, want ErrTaskEnded", err)
	}
	if _, err := s.Certificate(ctx, again.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused issuance was recorded: %v", err)
	}
	if jt, err := s.JoinToken(ctx, tok); err != nil || jt.UsedBy != "" {
		t.Fatalf("a refused issuance consumed its token: %+v %v", jt, err)
	}
	for _, task := range []string{"ticket-2", ""} {
		other := cert(t, "spiffe://example.org/a")
		other.Task = task
		if err := s.Issue(ctx, &store.Issuance{Certificate: other, Now: now}); err != nil {
			t.Fatalf("Issue for task %q: %v", task, err)
		}
	}
	if err := s.EndTask(ctx, "", now); err == nil {
		t.Fatal("EndTask of an empty task: want an error")
	}
}
