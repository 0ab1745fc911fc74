package nodeagent

// Federated bundles (SPIFFE federation): the bundles of the foreign trust
// domains the node's Source fetched from the CA, sent in
// X509SVIDResponse.federated_bundles and FetchX509Bundles.

import (
	"crypto/sha256"
	"slices"
	"strings"
)

// federatedDER returns the federated bundles, by trust domain ID
// ("spiffe://b.example"), each the concatenated DER of its authorities.
func (a *Agent) federatedDER() map[string][]byte {
	if a.cfg.Federated == nil {
		return nil
	}
	fed := a.cfg.Federated()
	if len(fed) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(fed))
	for td, roots := range fed {
		if td == a.cfg.TrustDomain || len(roots) == 0 {
			continue // never an empty bundle, never a second own one
		}
		out[td.IDString()] = concatDER(roots)
	}
	return out
}

// federatedDigest is a digest of the federated bundles, to notice changes.
func (a *Agent) federatedDigest() [32]byte {
	fed := a.federatedDER()
	ids := make([]string, 0, len(fed))
	for id := range fed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := sha256.New()
	for _, id := range ids {
		h.Write([]byte(id + "\x00"))
		h.Write(fed[id])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// federatedState appends the federated bundles to a stream's state, so a
// change of them is sent.
func federatedState(b *strings.Builder, fed map[string][]byte) {
	ids := make([]string, 0, len(fed))
	for id := range fed {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.WriteString(id)
		b.Write(fed[id])
	}
}
