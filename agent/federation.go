package agent

// SPIFFE federation on the agent's side: the bundles of the foreign trust
// domains a caller names (Config.FederatesWith), fetched from the CA's
// /v1/bundle?trust_domain=… (the CA keeps them fresh from their bundle
// endpoints), kept with the own bundle, handed to go-spiffe's tlsconfig
// through GetX509BundleForTrustDomain and written as bundle.<td>.pem.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/internal/fsutil"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FederatedBundleFile is the name of a federated trust domain's bundle
// file in an agent's output directory: bundle.<trust domain>.pem.
func FederatedBundleFile(td spiffeid.TrustDomain) string { return "bundle." + td.Name() + ".pem" }

// FederatedBundle fetches the CA's copy of the bundle of trust domain td
// (its own or a federated one) from /v1/bundle?trust_domain=td.
func (c *Client) FederatedBundle(ctx context.Context, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	body, err := c.get(ctx, "/v1/bundle?trust_domain="+url.QueryEscape(td.Name()))
	if err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		return nil, fmt.Errorf("agent: bundle of %s: %w", td, err)
	}
	if len(b.X509Authorities()) == 0 {
		return nil, fmt.Errorf("agent: the bundle of %s has no X.509 authority", td)
	}
	return b, nil
}

// ParseTrustDomains parses trust domain names ("b.example"), refusing
// duplicates and SPIFFE IDs.
func ParseTrustDomains(names []string) ([]spiffeid.TrustDomain, error) {
	var out []spiffeid.TrustDomain
	for _, n := range names {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil || td.Name() != n || strings.Contains(n, "/") {
			return nil, fmt.Errorf("agent: %q is not a trust domain name such as b.example", n)
		}
		if slices.Contains(out, td) {
			return nil, fmt.Errorf("agent: trust domain %q named twice", n)
		}
		out = append(out, td)
	}
	return out, nil
}

// federatedState is the federated bundles held, by trust domain.
type federatedState map[spiffeid.TrustDomain]*x509bundle.Bundle

// refreshFederated fetches the bundle of every trust domain in
// Config.FederatesWith; one that fails keeps the bundle held. It returns
// the shortest refresh hint seen (zero: none) and the first error.
func (s *Source) refreshFederated(ctx context.Context) (time.Duration, error) {
	if len(s.federatesWith) == 0 {
		return 0, nil
	}
	next := federatedState{}
	if cur := s.federated.Load(); cur != nil {
		for td, b := range *cur {
			next[td] = b
		}
	}
	var hint time.Duration
	var errs []error
	for _, td := range s.federatesWith {
		b, err := s.client.FederatedBundle(ctx, td)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[td] = b.X509Bundle()
		if h, ok := b.RefreshHint(); ok && h > 0 && (hint == 0 || h < hint) {
			hint = h
		}
	}
	s.federated.Store(&next)
	if s.cfg.Dir != "" {
		if err := WriteFederatedBundles(s.cfg.Dir, next); err != nil {
			errs = append(errs, err)
		}
	}
	return hint, errors.Join(errs...)
}

// federatedBundle returns the bundle held for td, a trust domain the
// caller named in Config.FederatesWith.
func (s *Source) federatedBundle(td spiffeid.TrustDomain) (*x509bundle.Bundle, bool) {
	cur := s.federated.Load()
	if cur == nil {
		return nil, false
	}
	b, ok := (*cur)[td]
	return b, ok
}

// FederatedBundles returns the X.509 authorities of each federated trust
// domain held (those named in Config.FederatesWith that were fetched).
func (s *Source) FederatedBundles() map[spiffeid.TrustDomain][]*x509.Certificate {
	out := map[spiffeid.TrustDomain][]*x509.Certificate{}
	if cur := s.federated.Load(); cur != nil {
		for td, b := range *cur {
			out[td] = b.X509Authorities()
		}
	}
	return out
}

// WriteFederatedBundles atomically replaces dir/bundle.<td>.pem for each
// trust domain in bundles.
func WriteFederatedBundles(dir string, bundles map[spiffeid.TrustDomain]*x509bundle.Bundle) error {
	for td, b := range bundles {
		var buf bytes.Buffer
		for _, r := range b.X509Authorities() {
			_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
		}
		if err := fsutil.WriteFile(filepath.Join(dir, FederatedBundleFile(td)), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	return nil
}
