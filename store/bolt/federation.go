package bolt

// Foreign trust domains' bundles (SPIFFE federation): one JSON value,
// meta "federation", changed only inside a write transaction.

import (
	"context"
	"errors"

	"github.com/agentca/agentca/store"
)

var keyFederation = []byte("federation")

// errNotNewer refuses a put that would replace a later bundle.
var errNotNewer = errors.New("not newer")

// FederatedBundles returns every stored foreign bundle (an empty set when
// none was ever stored).
func (s *Store) FederatedBundles(ctx context.Context) (*store.FederationSet, error) {
	return viewJSON[store.FederationSet](s, keyFederation, "federation")
}

// PutFederatedBundle stores b unless a bundle of its trust domain fetched
// later is stored already; it returns the bundle stored for that trust
// domain afterwards (b, or the later one).
func (s *Store) PutFederatedBundle(ctx context.Context, b store.FederatedBundle) (store.FederatedBundle, error) {
	set, err := updateJSON(ctx, s, keyFederation, "federation", func(f *store.FederationSet) { f.Sequence++ },
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
