package agent

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The Source is a go-spiffe X.509-SVID source and bundle source, so the
// go-spiffe tlsconfig helpers (and anything else built on those
// interfaces) can use it directly.
var (
	_ x509svid.Source   = (*Source)(nil)
	_ x509bundle.Source = (*Source)(nil)
)

// GetX509SVID implements x509svid.Source: the current certificate.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	cr := s.creds.Load()
	id, err := spiffeid.FromString(cr.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: append([]*x509.Certificate{cr.Leaf}, cr.Chain...), PrivateKey: cr.Key}, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source: every anchor
// the CA currently publishes, for the Source's own trust domain, and the
// bundles of the federated trust domains named in Config.FederatesWith.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	own, err := spiffeid.FromString(s.creds.Load().SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if td != own.TrustDomain() {
		if b, ok := s.federatedBundle(td); ok {
			return b, nil
		}
		return nil, fmt.Errorf("agent: no bundle for trust domain %q", td)
	}
	return x509bundle.FromX509Authorities(td, s.trust.Load().roots), nil
}

// ServerTLSConfig returns a tls.Config for an mTLS server: it presents the
// current certificate and accepts clients whose certificate chains to the
// current bundle and whose SPIFFE ID authorize accepts (for example
// tlsconfig.AuthorizeMemberOf(td) or tlsconfig.AuthorizeID(id)).
func (s *Source) ServerTLSConfig(authorize tlsconfig.Authorizer) *tls.Config {
	c := tlsconfig.MTLSServerConfig(s, s, authorize)
	c.GetCertificate = s.GetCertificate // with the OCSP staple
	return c
}

// ClientTLSConfig returns a tls.Config for an mTLS client: it presents the
// current certificate and accepts servers that chain to the current
// bundle and whose SPIFFE ID authorize accepts.
func (s *Source) ClientTLSConfig(authorize tlsconfig.Authorizer) *tls.Config {
	return tlsconfig.MTLSClientConfig(s, s, authorize)
}
