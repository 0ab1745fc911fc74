package etcd

// Foreign trust domains' bundles (SPIFFE federation): one JSON value,
// P/federation, replaced by compare-and-swap on its mod revision.

import (
	"context"
	"errors"

	"github.com/agentca/agentca/store"
)

func (k keys) federation() string { return k.p + "/federation" }

// errNotNewer refuses a put that would replace a later bundle.
var errNotNewer = errors.New("not newer")

// FederatedBundles returns every stored foreign bundle (an empty set when
// none was ever stored).
func (s *Store) FederatedBundles(ctx context.Context) (*store.FederationSet, error) {
	return getJSON[store.FederationSet](ctx, s, s.k.federation(), "federation")
}

// PutFederatedBundle stores b unless a bundle of its trust domain fetched
// later is stored already; it returns the bundle stored for that trust
// domain afterwards (b, or the later one).
func (s *Store) PutFederatedBundle(ctx context.Context, b store.FederatedBundle) (store.FederatedBundle, error) {
	set, err := updateJSON(ctx, s, s.k.federation(), "federation", func(f *store.FederationSet) { f.Sequence++ },
		func(f *store.FederationSet) error {
			if !f.Put(b) {
				return errNotNewer
			}
			return nil
		})
	if errors.Is(err, errNotNewer) {
		if set, err = s.FederatedBundles(ctx); err != nil {
			return store.FederatedBundle{}, err
		}
	} else if err != nil {
		return store.FederatedBundle{}, err
	}
	return set.Bundles[b.TrustDomain], nil
}
