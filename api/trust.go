package api

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/ca"
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
	// Sequence is the bundle's spiffe_sequence.
	Sequence uint64
	// Issuers are the issuing CAs that still answer for what they issued
	// (the active one and those retiring), by hex subject key
	// identifier: the caIssuers URL and the CT extra_data serve them.
	Issuers map[string]*ca.Issuer

	// certs are the issuing CA certificates of every anchor, by hex
	// subject key identifier (see AddIssuingCert).
	certs map[string]IssuingCert
	// sb is the bundle Bundle encodes; jwt the JWT-SVID keys
	// (SetJWTKeys), nil when there are none.
	sb  *spiffebundle.Bundle
	jwt *jwtKeys
}

// issuer returns the issuing CA with subject key identifier ski (hex).
func (t *Trust) issuer(ski string) *ca.Issuer { return t.Issuers[ski] }

// IssuingCert is an issuing CA certificate with the root that signed it.
type IssuingCert struct {
	Cert, Root *x509.Certificate
}

// AddIssuingCert records the issuing CA of an anchor that no longer (or
// not yet) answers for certificates: its leaves stay in the issuance log
// and name it in their caIssuers URL, so it is still served.
func (t *Trust) AddIssuingCert(cert, root *x509.Certificate) {
	ski := hex.EncodeToString(cert.SubjectKeyId)
	if _, ok := t.certs[ski]; !ok {
		t.certs[ski] = IssuingCert{Cert: cert, Root: root}
	}
}

// issuingCert returns the issuing CA certificate with subject key
// identifier ski (hex), answering or not.
func (t *Trust) issuingCert(ski string) (IssuingCert, bool) {
	c, ok := t.certs[ski]
	return c, ok
}

// NewTrust encodes roots for trust domain td. sequence is the bundle's
// spiffe_sequence; refreshHint its spiffe_refresh_hint. issuers are the
// issuing CAs still answering for their certificates.
func NewTrust(td string, roots []*x509.Certificate, sequence uint64, refreshHint time.Duration, issuers ...*ca.Issuer) (*Trust, error) {
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
	t := &Trust{Roots: roots, Pool: x509.NewCertPool(), Bundle: bundle, Sequence: sequence, Issuers: map[string]*ca.Issuer{}}
	t.certs, t.sb = map[string]IssuingCert{}, b
	for _, iss := range issuers {
		t.Issuers[iss.SKI] = iss
		t.certs[iss.SKI] = IssuingCert{Cert: iss.Cert, Root: iss.Root}
	}
	for _, r := range roots {
		t.Pool.AddCert(r)
		t.RootsPEM = append(t.RootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return t, nil
}

// TrustSource gives the current trust material.
type TrustSource interface {
	Trust() *Trust
}

// Trust makes a fixed set its own TrustSource.
func (t *Trust) Trust() *Trust { return t }

// trustRef is the Server's TrustSource, swapped atomically (SetTrust).
type trustRef struct{ v atomic.Value } // holds trustHolder

type trustHolder struct{ TrustSource }

func (r *trustRef) set(src TrustSource) { r.v.Store(trustHolder{src}) }

// Load returns the current trust material.
func (r *trustRef) Load() *Trust { return r.v.Load().(trustHolder).Trust() }
