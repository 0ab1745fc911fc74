package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/workloads"
)

var workloadTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"WorkloadsEmpty", testWorkloadsEmpty},
	{"WorkloadsUpdate", testWorkloadsUpdate},
	{"WorkloadsConcurrent", testWorkloadsConcurrent},
	{"ListByParent", testListByParent},
}

func testWorkloadsEmpty(t *testing.T, s store.Store) {
	set, err := s.Workloads(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 0 || len(set.Definitions) != 0 {
		t.Fatalf("empty store has workloads %+v", set)
	}
}

func testWorkloadsUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	d := workloads.Definition{ID: "web", SPIFFEID: "spiffe://example.org/ns/{{k8s:ns}}", Selectors: []string{"unix:uid:1000"},
		Nodes: []string{"spiffe://example.org/node/*"}, NodeProvisioners: []string{"join"}, TTL: "5m", CreatedAt: now}
	got, err := s.UpdateWorkloads(ctx, func(set *workloads.Set) error {
		set.Definitions = append(set.Definitions, d)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Sequence != 1 || len(got.Definitions) != 1 {
		t.Fatalf("after one update: %+v", got)
	}
	refused := errors.New("no")
	if _, err := s.UpdateWorkloads(ctx, func(set *workloads.Set) error {
		set.Definitions = nil
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("fn's error: got %v", err)
	}
	set, err := s.Workloads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 1 || len(set.Definitions) != 1 {
		t.Fatalf("a refused update changed the set: %+v", set)
	}
	g := set.Definitions[0]
	if g.ID != d.ID || g.SPIFFEID != d.SPIFFEID || g.TTL != d.TTL || !g.CreatedAt.Equal(d.CreatedAt) ||
		fmt.Sprint(g.Selectors, g.Nodes, g.NodeProvisioners) != fmt.Sprint(d.Selectors, d.Nodes, d.NodeProvisioners) {
		t.Fatalf("read back %+v, stored %+v", g, d)
	}
}

// testWorkloadsConcurrent: concurrent updates each land once.
func testWorkloadsConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateWorkloads(ctx, func(set *workloads.Set) error {
				set.Definitions = append(set.Definitions, workloads.Definition{ID: fmt.Sprintf("d%d", i)})
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	set, err := s.Workloads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != n || len(set.Definitions) != n {
		t.Fatalf("after %d concurrent updates: sequence %d, %d definitions", n, set.Sequence, len(set.Definitions))
	}
}

func testListByParent(t *testing.T, s store.Store) {
	ctx := context.Background()
	node := cert(t, "spiffe://example.org/node/1")
	if err := s.Issue(ctx, &store.Issuance{Certificate: node, Now: now}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range 6 {
		c := cert(t, "spiffe://example.org/w")
		if i%2 == 0 {
			c.Parent = node.Serial
			want[c.Serial] = true
		}
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListCertificates(ctx, store.ListOptions{Parent: node.Serial})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("parent lists %d certificates, want %d", len(got), len(want))
	}
	for _, c := range got {
		if !want[c.Serial] || c.Parent != node.Serial {
			t.Fatalf("unexpected certificate %s (parent %q)", c.Serial, c.Parent)
		}
	}
	// Workloads: every workload SVID and nothing else, also across pages
	// (the records without a parent are skipped undecoded).
	seen := map[string]bool{}
	for after := ""; ; {
		page, err := s.ListCertificates(ctx, store.ListOptions{Workloads: true, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			if c.Parent == "" || seen[c.Serial] {
				t.Fatalf("Workloads listed %s (parent %q, seen before %v)", c.Serial, c.Parent, seen[c.Serial])
			}
			seen[c.Serial] = true
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Serial
	}
	for serial := range want {
		if !seen[serial] {
			t.Fatalf("Workloads left out the workload SVID %s", serial)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("Workloads listed %d certificates, want %d", len(seen), len(want))
	}
}
