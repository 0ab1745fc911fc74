// Package verify is the relying-service side of agentca: it checks a TLS
// peer's certificate against the CA's trust bundle, authorises its SPIFFE
// ID, and checks its revocation status by OCSP (a stapled response first,
// else fetched and cached until its nextUpdate) with the CRL as fallback.
//
// It fails closed: a peer whose status cannot be established is refused,
// unless SoftFail is set. Chain and SPIFFE ID checks use go-spiffe; OCSP
// parsing and signature checks use golang.org/x/crypto/ocsp.
package verify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.step.sm/crypto/pemutil"
)

// ErrRevoked is returned for a revoked peer certificate.
var ErrRevoked = errors.New("verify: certificate revoked")

// ErrStatusUnknown is returned when neither OCSP nor the CRL could
// establish a peer's status (and SoftFail is off), or the responder said
// unknown.
var ErrStatusUnknown = errors.New("verify: revocation status unknown")

// ErrStatusUnavailable is wrapped (beside ErrStatusUnknown) when the
// status is unknown because neither an OCSP response nor a CRL could be
// obtained, as opposed to a responder answering "unknown": a transient
// condition a caller may retry.
var ErrStatusUnavailable = errors.New("no OCSP response or CRL could be obtained")

// RevokedError carries the revocation details; it wraps ErrRevoked.
type RevokedError struct {
	Serial string
	At     time.Time
	Reason int
	Source string // "ocsp", "stapled ocsp" or "crl"
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("verify: certificate %s revoked at %s (reason %d, from %s)", e.Serial, e.At.Format(time.RFC3339), e.Reason, e.Source)
}

func (e *RevokedError) Unwrap() error { return ErrRevoked }

// Options configure a Verifier. Zero values are documented per field.
type Options struct {
	// TrustDomain of the CA. Required.
	TrustDomain string
	// Roots are the trust anchors. Either Roots or BundleFile is
	// required; with RootsURL they are refreshed.
	Roots []*x509.Certificate
	// BundleFile is a PEM file of trust anchors, re-read on every
	// refresh (the agent rewrites bundle.pem at each renewal).
	BundleFile string
	// RootsURL is the CA's /v1/roots URL; when set, the anchors are
	// fetched from it every RefreshInterval, over TLS verified with the
	// anchors already held.
	RootsURL string
	// BundleURL is the CA's /v1/bundle URL (a SPIFFE trust bundle);
	// when set, the anchors are fetched from it like RootsURL, as often
	// as its spiffe_refresh_hint says unless RefreshInterval is set.
	BundleURL string
	// RefreshInterval for BundleFile, RootsURL and BundleURL; zero means
	// 1 minute (BundleURL: the bundle's refresh hint, else 1 minute).
	RefreshInterval time.Duration
	// Authorize decides which SPIFFE IDs may connect; nil means any ID in
	// TrustDomain. Use go-spiffe's tlsconfig.AuthorizeID, AuthorizeOneOf,
	// AuthorizeMemberOf or AuthorizeMatch (path prefix), or a func.
	Authorize tlsconfig.Authorizer
	// SoftFail accepts a peer whose revocation status cannot be
	// established (responder and CRL unreachable). Off by default: fail
	// closed.
	SoftFail bool
	// DisableRevocation skips OCSP and CRL checks altogether.
	DisableRevocation bool
	// MaxCacheAge caps how long a fetched OCSP response or CRL is reused,
	// below its nextUpdate; zero means until nextUpdate.
	MaxCacheAge time.Duration
	// HTTPClient fetches OCSP, CRLs and roots; nil means a client with a
	// 2 s timeout.
	HTTPClient *http.Client
	// FederatesWith names foreign trust domains ("b.example") whose
	// peers may be accepted: their bundles come from BundleURL with
	// ?trust_domain=…, else bundle.<td>.pem beside BundleFile, else
	// FederatedRoots, and are refreshed with the own bundle
	// (federation.go). Authorize nil then accepts members of these too.
	FederatesWith []string
	// FederatedRoots are fixed anchors of federated trust domains named
	// in FederatesWith, by trust domain name.
	FederatedRoots map[string][]*x509.Certificate
	// Now nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Verifier verifies peers. Its methods are safe for concurrent use.
type Verifier struct {
	opts   Options
	td     spiffeid.TrustDomain
	bundle atomic.Pointer[x509bundle.Bundle]
	rev    *revocationChecker

	// followHint: the refresh interval is the bundle's refresh hint.
	followHint bool
	hint       atomic.Int64 // the last refresh hint seen, in nanoseconds

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	// jwt holds the JWT-SVID keys of the last bundle fetched from
	// BundleURL (jwtsvid.go).
	jwt atomic.Pointer[jwtbundle.Bundle]

	// fedTDs are Options.FederatesWith; federated their bundles.
	fedTDs    []spiffeid.TrustDomain
	federated atomic.Pointer[federatedBundles]
}

// New builds a Verifier and starts refreshing the bundle when a source to
// refresh from is configured; Close stops that.
func New(opts Options) (*Verifier, error) {
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("verify: trust domain: %w", err)
	}
	v := &Verifier{done: make(chan struct{})}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = time.Minute
		v.followHint = opts.BundleURL != ""
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 2 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	v.opts, v.td = opts, td
	if err := v.initFederation(); err != nil {
		return nil, err
	}
	if v.opts.Authorize == nil {
		v.opts.Authorize = v.defaultAuthorizer()
	}
	v.rev = &revocationChecker{opts: &v.opts}
	roots := opts.Roots
	if len(roots) == 0 && opts.BundleFile != "" {
		if roots, err = pemutil.ReadCertificateBundle(opts.BundleFile); err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("verify: Roots or BundleFile is required")
	}
	v.bundle.Store(x509bundle.FromX509Authorities(td, roots))
	if err := v.refreshFederated(context.Background()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	if opts.BundleFile != "" || opts.RootsURL != "" || opts.BundleURL != "" {
		go v.refreshLoop(ctx)
	} else {
		close(v.done)
	}
	return v, nil
}

// Close stops the bundle refresh.
func (v *Verifier) Close() error {
	v.once.Do(func() {
		v.cancel()
		<-v.done
	})
	return nil
}

// Roots returns the current trust anchors.
func (v *Verifier) Roots() []*x509.Certificate { return v.bundle.Load().X509Authorities() }

// GetX509BundleForTrustDomain implements go-spiffe's x509bundle.Source.
func (v *Verifier) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != v.td {
		if b, ok := v.federatedBundle(td); ok {
			return b, nil
		}
		return nil, fmt.Errorf("verify: no bundle for trust domain %q", td)
	}
	return v.bundle.Load(), nil
}

// ServerTLSConfig returns an mTLS server configuration: it presents svid's
// certificate, requires a client certificate that chains to the bundle
// with an authorised SPIFFE ID, and checks its revocation status.
func (v *Verifier) ServerTLSConfig(svid x509svid.Source) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svid, v, v.opts.Authorize)
	c.VerifyConnection = v.VerifyConnection
	return c
}

// ClientTLSConfig returns an mTLS client configuration, the mirror of
// ServerTLSConfig; a response stapled by the server is used first.
func (v *Verifier) ClientTLSConfig(svid x509svid.Source) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svid, v, v.opts.Authorize)
	c.VerifyConnection = v.VerifyConnection
	return c
}

// VerifyConnection is a tls.Config.VerifyConnection hook that checks the
// peer's revocation status. It expects the chain and SPIFFE ID to have
// been verified already (as the go-spiffe configurations above do); used
// alone, call VerifyPeer instead.
func (v *Verifier) VerifyConnection(cs tls.ConnectionState) error {
	if v.opts.DisableRevocation || len(cs.PeerCertificates) == 0 {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	issuer := findIssuer(leaf, cs.PeerCertificates[1:])
	if issuer == nil {
		return errors.New("verify: the peer sent no issuing CA certificate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return v.rev.check(ctx, leaf, issuer, cs.OCSPResponse)
}

// VerifyPeer does every check on a raw peer chain (leaf first): chain to
// the bundle, SPIFFE ID authorisation, revocation. It returns the peer's
// SPIFFE ID.
func (v *Verifier) VerifyPeer(ctx context.Context, raw [][]byte, stapled []byte) (spiffeid.ID, error) {
	id, chains, err := x509svid.ParseAndVerify(raw, v, x509svid.WithTime(v.opts.Now()))
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := v.opts.Authorize(id, chains); err != nil {
		return spiffeid.ID{}, err
	}
	if v.opts.DisableRevocation {
		return id, nil
	}
	chain := chains[0]
	if len(chain) < 2 {
		return spiffeid.ID{}, errors.New("verify: chain without an issuer")
	}
	if err := v.rev.check(ctx, chain[0], chain[1], stapled); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

func findIssuer(leaf *x509.Certificate, candidates []*x509.Certificate) *x509.Certificate {
	for _, c := range candidates {
		if leaf.CheckSignatureFrom(c) == nil {
			return c
		}
	}
	return nil
}

func (v *Verifier) refreshLoop(ctx context.Context) {
	defer close(v.done)
	// Following the hint starts with a fetch, to learn it.
	first := v.followHint
	for {
		wait := v.opts.RefreshInterval
		if h := time.Duration(v.hint.Load()); v.followHint && h > 0 {
			wait = min(max(h, time.Second), time.Hour)
		}
		if first {
			wait, first = 0, false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := v.Refresh(ctx); err != nil {
			v.opts.Logger.Warn("trust bundle refresh failed; keeping the current one", "err", err)
		}
	}
}

// Refresh re-reads the bundle from BundleFile or RootsURL now.
func (v *Verifier) Refresh(ctx context.Context) error {
	var roots []*x509.Certificate
	var err error
	switch {
	case v.opts.BundleURL != "":
		roots, err = v.fetchBundle(ctx)
	case v.opts.RootsURL != "":
		roots, err = v.fetchRoots(ctx)
	case v.opts.BundleFile != "":
		roots, err = pemutil.ReadCertificateBundle(v.opts.BundleFile)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	if len(roots) == 0 {
		return errors.New("verify: refreshed bundle is empty")
	}
	v.bundle.Store(x509bundle.FromX509Authorities(v.td, roots))
	return v.refreshFederated(ctx)
}

func (v *Verifier) fetchRoots(ctx context.Context) ([]*x509.Certificate, error) {
	body, err := v.fetchTrusted(ctx, v.opts.RootsURL)
	if err != nil {
		return nil, err
	}
	return pemutil.ParseCertificateBundle(body)
}

// fetchBundle reads the SPIFFE trust bundle at BundleURL and keeps its
// refresh hint.
func (v *Verifier) fetchBundle(ctx context.Context) ([]*x509.Certificate, error) {
	body, err := v.fetchTrusted(ctx, v.opts.BundleURL)
	if err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(v.td, body)
	if err != nil {
		return nil, fmt.Errorf("verify: %s: %w", v.opts.BundleURL, err)
	}
	if h, ok := b.RefreshHint(); ok {
		v.hint.Store(int64(h))
	}
	if len(b.X509Authorities()) > 0 {
		v.jwt.Store(jwtbundle.FromJWTAuthorities(v.td, b.JWTAuthorities()))
	}
	return b.X509Authorities(), nil
}

// fetchTrusted GETs url over TLS verified with the anchors already held.
func (v *Verifier) fetchTrusted(ctx context.Context, url string) ([]byte, error) {
	pool := x509.NewCertPool()
	for _, r := range v.Roots() {
		pool.AddCert(r)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return get(ctx, hc, url)
}
