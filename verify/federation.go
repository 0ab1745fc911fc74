package verify

// SPIFFE federation for relying services: the bundles of the foreign
// trust domains named in Options.FederatesWith, read from the same
// source as the own bundle (BundleURL?trust_domain=…, or
// bundle.<td>.pem beside BundleFile, as agentca enroll writes them, or
// Options.FederatedRoots), refreshed with it, and used to verify peers of
// those trust domains.

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.step.sm/crypto/pemutil"
)

type federatedBundles map[spiffeid.TrustDomain]*x509bundle.Bundle

// initFederation checks Options.FederatesWith; New then loads the
// federated bundles once (refreshFederated): a trust domain without a
// bundle is an error.
func (v *Verifier) initFederation() error {
	for _, n := range v.opts.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil || td.Name() != n || td == v.td {
			return fmt.Errorf("verify: FederatesWith: %q is not a foreign trust domain name", n)
		}
		v.fedTDs = append(v.fedTDs, td)
	}
	for n := range v.opts.FederatedRoots {
		td, err := spiffeid.TrustDomainFromString(n)
		if err != nil || !v.federates(td) {
			return fmt.Errorf("verify: FederatedRoots: %q is not named in FederatesWith", n)
		}
	}
	if len(v.fedTDs) == 0 {
		return nil
	}
	if v.opts.BundleURL == "" && v.opts.BundleFile == "" && len(v.opts.FederatedRoots) != len(v.fedTDs) {
		return errors.New("verify: FederatesWith needs BundleURL, BundleFile or FederatedRoots for each trust domain")
	}
	v.federated.Store(&federatedBundles{})
	return nil
}

func (v *Verifier) federates(td spiffeid.TrustDomain) bool {
	for _, t := range v.fedTDs {
		if t == td {
			return true
		}
	}
	return false
}

// refreshFederated reads every federated bundle again; one that fails
// keeps the bundle held (never an empty one).
func (v *Verifier) refreshFederated(ctx context.Context) error {
	if len(v.fedTDs) == 0 {
		return nil
	}
	next := federatedBundles{}
	if cur := v.federated.Load(); cur != nil {
		for td, b := range *cur {
			next[td] = b
		}
	}
	var errs []error
	for _, td := range v.fedTDs {
		roots, err := v.federatedRoots(ctx, td)
		if err == nil && len(roots) == 0 {
			err = fmt.Errorf("verify: the bundle of %s is empty", td)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next[td] = x509bundle.FromX509Authorities(td, roots)
	}
	v.federated.Store(&next)
	for _, td := range v.fedTDs {
		if _, ok := next[td]; !ok {
			errs = append(errs, fmt.Errorf("verify: no bundle for federated trust domain %s", td))
		}
	}
	return errors.Join(errs...)
}

// federatedRoots reads td's bundle from the configured source.
func (v *Verifier) federatedRoots(ctx context.Context, td spiffeid.TrustDomain) ([]*x509.Certificate, error) {
	switch {
	case v.opts.FederatedRoots[td.Name()] != nil:
		return v.opts.FederatedRoots[td.Name()], nil
	case v.opts.BundleURL != "":
		u, err := url.Parse(v.opts.BundleURL)
		if err != nil {
			return nil, err
		}
		u.RawQuery = url.Values{"trust_domain": {td.Name()}}.Encode()
		body, err := v.fetchTrusted(ctx, u.String())
		if err != nil {
			return nil, err
		}
		b, err := spiffebundle.Parse(td, body)
		if err != nil {
			return nil, fmt.Errorf("verify: bundle of %s: %w", td, err)
		}
		return b.X509Authorities(), nil
	case v.opts.BundleFile != "":
		return pemutil.ReadCertificateBundle(filepath.Join(filepath.Dir(v.opts.BundleFile), "bundle."+td.Name()+".pem"))
	}
	return nil, fmt.Errorf("verify: no source for the bundle of %s", td)
}

func (v *Verifier) federatedBundle(td spiffeid.TrustDomain) (*x509bundle.Bundle, bool) {
	cur := v.federated.Load()
	if cur == nil {
		return nil, false
	}
	b, ok := (*cur)[td]
	return b, ok
}

// defaultAuthorizer accepts members of the own trust domain and of the
// federated ones.
func (v *Verifier) defaultAuthorizer() tlsconfig.Authorizer {
	tds := append([]spiffeid.TrustDomain{v.td}, v.fedTDs...)
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		for _, td := range tds {
			if id.MemberOf(td) {
				return nil
			}
		}
		return fmt.Errorf("verify: %s is not a member of a trusted trust domain", id)
	})
}
