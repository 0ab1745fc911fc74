package api

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Trust is the published trust material, encoded once and served as bytes.
type Trust struct {
	// Roots are the anchors a relying service must trust now.
	Roots []*x509.Certificate
	// Pool holds Roots, for verifying client certificates.
	Pool *x509.CertPool
	// RootsPEM is the body of /v1/roots.
	RootsPEM []byte
	// Bundle is the body of /v1/bundle (SPIFFE trust bundle, JWKS).
	Bundle []byte
}

// NewTrust encodes roots for trust domain td. sequence is the bundle's
// spiffe_sequence; refreshHint its spiffe_refresh_hint.
func NewTrust(td string, roots []*x509.Certificate, sequence uint64, refreshHint time.Duration) (*Trust, error) {
	tdID, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	b := spiffebundle.FromX509Authorities(tdID, roots)
	b.SetSequenceNumber(sequence)
	b.SetRefreshHint(refreshHint)
	bundle, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("api: encode bundle: %w", err)
	}
	t := &Trust{Roots: roots, Pool: x509.NewCertPool(), Bundle: bundle}
	for _, r := range roots {
		t.Pool.AddCert(r)
		t.RootsPEM = append(t.RootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return t, nil
}
