// Package federation is the CA's side of SPIFFE federation (SPIFFE
// Federation specification; docs/federation.md): it fetches the bundles
// of the foreign trust domains listed in agentca.json from their bundle
// endpoints (go-spiffe's federation.FetchBundle, https_spiffe or
// https_web), at start and again per their refresh hint, keeps the last
// good one of each in the store (shared by replicas), and serves them
// (spiffebundle.Source, for /v1/bundle?trust_domain=…). A fetch that fails
// keeps the last good bundle, never an empty one.
package federation

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxBundleSize bounds a bundle read from a file or the store.
const MaxBundleSize = 1 << 20

// ParseBundle reads the SPIFFE bundle of trust domain td (JSON, as
// bundle endpoints serve it and bootstrap files hold it) and refuses one
// that cannot authenticate anything: no X.509 authority. It never
// returns an empty bundle.
func ParseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("federation: %s: bundle of %d bytes is over %d", td, len(data), MaxBundleSize)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("federation: %s: %w", td, err)
	}
	if err := checkBundle(b); err != nil {
		return nil, err
	}
	return b, nil
}

// checkBundle refuses a bundle with no X.509 authority.
func checkBundle(b *spiffebundle.Bundle) error {
	if len(b.X509Authorities()) == 0 {
		return fmt.Errorf("federation: %s: %w", b.TrustDomain(), errNoAuthority)
	}
	return nil
}

var errNoAuthority = errors.New("the bundle has no X.509 authority")
