package store

import "time"

// FederatedBundle is the last good SPIFFE bundle of a foreign trust
// domain (SPIFFE federation, docs/federation.md), as its bundle endpoint
// served it. Replicas sharing a store share these.
type FederatedBundle struct {
	// TrustDomain is the foreign trust domain's name ("b.example").
	TrustDomain string `json:"trust_domain"`
	// Bundle is the SPIFFE bundle (JWKS), as go-spiffe's spiffebundle
	// encodes it.
	Bundle []byte `json:"bundle"`
	// FetchedAt is when it was fetched (or loaded from the bootstrap
	// file); a later one replaces an earlier one, never the reverse.
	FetchedAt time.Time `json:"fetched_at"`
	// Source is where it came from: "endpoint" or "bootstrap".
	Source string `json:"source,omitempty"`
}

// FederationSet is every stored foreign bundle, by trust domain.
type FederationSet struct {
	Sequence uint64                     `json:"sequence"`
	Bundles  map[string]FederatedBundle `json:"bundles,omitempty"`
}

// Put records b unless the set holds a bundle of that trust domain fetched
// later; it reports whether it did. The bundle bytes are copied.
func (s *FederationSet) Put(b FederatedBundle) bool {
	if cur, ok := s.Bundles[b.TrustDomain]; ok && !b.FetchedAt.After(cur.FetchedAt) {
		return false
	}
	if s.Bundles == nil {
		s.Bundles = map[string]FederatedBundle{}
	}
	b.Bundle = append([]byte(nil), b.Bundle...)
	s.Bundles[b.TrustDomain] = b
	return true
}
