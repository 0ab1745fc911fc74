package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
)

// federatedBundles is the store role the federation fetcher uses (the
// federation package's Store); every backend implements it.
type federatedBundles interface {
	FederatedBundles(ctx context.Context) (*store.FederationSet, error)
	PutFederatedBundle(ctx context.Context, b store.FederatedBundle) (store.FederatedBundle, error)
}

var federationTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"FederationEmpty", testFederationEmpty},
	{"FederationPut", testFederationPut},
	{"FederationConcurrent", testFederationConcurrent},
}

func federation(t *testing.T, s store.Store) federatedBundles {
	t.Helper()
	f, ok := s.(federatedBundles)
	if !ok {
		t.Fatalf("%T does not store federated bundles", s)
	}
	return f
}

func testFederationEmpty(t *testing.T, s store.Store) {
	set, err := federation(t, s).FederatedBundles(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 0 || len(set.Bundles) != 0 {
		t.Fatalf("empty store has federated bundles %+v", set)
	}
}

func testFederationPut(t *testing.T, s store.Store) {
	ctx, f := context.Background(), federation(t, s)
	first := store.FederatedBundle{TrustDomain: "b.example", Bundle: []byte(`{"keys":[1]}`), FetchedAt: now, Source: "bootstrap"}
	got, err := f.PutFederatedBundle(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Bundle) != string(first.Bundle) || !got.FetchedAt.Equal(now) {
		t.Fatalf("put returned %+v", got)
	}
	later := store.FederatedBundle{TrustDomain: "b.example", Bundle: []byte(`{"keys":[2]}`), FetchedAt: now.Add(time.Minute), Source: "endpoint"}
	if got, err = f.PutFederatedBundle(ctx, later); err != nil || string(got.Bundle) != string(later.Bundle) {
		t.Fatalf("a later bundle: %+v, %v", got, err)
	}
	// An earlier fetch (a slower replica) never replaces a later one.
	if got, err = f.PutFederatedBundle(ctx, first); err != nil || string(got.Bundle) != string(later.Bundle) {
		t.Fatalf("an earlier bundle replaced a later one: %+v, %v", got, err)
	}
	other := store.FederatedBundle{TrustDomain: "c.example", Bundle: []byte(`{"keys":[3]}`), FetchedAt: now}
	if _, err := f.PutFederatedBundle(ctx, other); err != nil {
		t.Fatal(err)
	}
	set, err := f.FederatedBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if set.Sequence != 3 || len(set.Bundles) != 2 || string(set.Bundles["b.example"].Bundle) != `{"keys":[2]}` ||
		set.Bundles["b.example"].Source != "endpoint" || string(set.Bundles["c.example"].Bundle) != `{"keys":[3]}` {
		t.Fatalf("stored set: %+v", set)
	}
}

func testFederationConcurrent(t *testing.T, s store.Store) {
	ctx, f := context.Background(), federation(t, s)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b := store.FederatedBundle{TrustDomain: fmt.Sprintf("td%d.example", i%4), Bundle: []byte{byte(i)}, FetchedAt: now.Add(time.Duration(i) * time.Second)}
			if _, err := f.PutFederatedBundle(ctx, b); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	set, err := f.FederatedBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Bundles) != 4 {
		t.Fatalf("got %d trust domains, want 4", len(set.Bundles))
	}
	for i := 4; i < 8; i++ { // the later of each pair wins, whatever the order
		if b := set.Bundles[fmt.Sprintf("td%d.example", i%4)]; len(b.Bundle) != 1 || b.Bundle[0] != byte(i) {
			t.Fatalf("td%d.example holds %v, want the later bundle %d", i%4, b.Bundle, i)
		}
	}
}
