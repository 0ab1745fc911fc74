// Package ca is agentca's signing core: it creates CA hierarchies and issues
// X.509-SVID leaf certificates.
//
// The Authority decides everything that goes into a certificate: whether
// the runtime policy (its Decider) allows it, the SPIFFE ID a provisioner
// vouched for (with package identity's rules), the lifetime within the
// configured limits and the policy's cap, and the profile (see Profile). It does not authenticate callers; that is
// the provisioners' job, and it does not speak HTTP. Each issuance is
// recorded through a Recorder in one transaction together with whatever the
// attestation consumes (a join token), so a certificate is never returned
// without being durably recorded.
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	"go.step.sm/crypto/keyutil"
)

// Recorder durably records an issuance. store.Store implements it.
type Recorder interface {
	Issue(ctx context.Context, iss *store.Issuance) error
}

// Issuer is a CA certificate with its signing key and the chain above it.
type Issuer struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
	// Root is the trust anchor Cert chains to.
	Root *x509.Certificate
	// SKI is the hex subject key identifier of Cert; it names the issuer
	// in store records.
	SKI string
	// Cross, when set, is Cert's name and key certified by another root
	// (a cross-signed certificate): relying services that only trust
	// that root can still build a chain. It is sent after Cert.
	Cross *x509.Certificate

	chainPEM []string
	chainDER [][]byte
}

// ErrIssuerExpired is returned when the issuing CA cannot cover a
// certificate any more.
var ErrIssuerExpired = errors.New("ca: the issuing CA has expired")

// ErrNoIssuer is returned when the CA has no usable issuing CA: the active
// anchor's key could not be loaded (on a replica without the key, for
// example). Nothing is issued until it can be.
var ErrNoIssuer = errors.New("ca: no usable issuing CA")

// clampNotAfter keeps a certificate within the issuer's validity, and
// refuses when there is none left.
func (i *Issuer) clampNotAfter(now, notAfter time.Time) (time.Time, error) {
	if i == nil {
		return time.Time{}, ErrNoIssuer
	}
	if !now.Before(i.Cert.NotAfter) {
		return time.Time{}, fmt.Errorf("%w at %s", ErrIssuerExpired, i.Cert.NotAfter.Format(time.RFC3339))
	}
	if notAfter.After(i.Cert.NotAfter) {
		return i.Cert.NotAfter, nil
	}
	return notAfter, nil
}

// ChainPEM returns the chain sent with each leaf, one PEM block per
// certificate: Cert, then Cross when there is one.
func (i *Issuer) ChainPEM() []string { return i.chainPEM }

// ChainDER returns the same chain as ChainPEM, in DER.
func (i *Issuer) ChainDER() [][]byte { return i.chainDER }

// NewIssuer checks that signer matches cert, that cert is a CA that chains
// to root, and returns the Issuer.
func NewIssuer(cert *x509.Certificate, signer crypto.Signer, root *x509.Certificate) (*Issuer, error) {
	if !cert.IsCA {
		return nil, errors.New("ca: issuing certificate is not a CA")
	}
	if err := keyutil.VerifyPair(cert.PublicKey, signer); err != nil {
		return nil, fmt.Errorf("ca: issuing key does not match its certificate: %w", err)
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("ca: issuing CA is not signed by the root: %w", err)
	}
	if len(cert.SubjectKeyId) == 0 {
		return nil, errors.New("ca: issuing certificate has no subject key identifier")
	}
	return newIssuer(cert, signer, root, nil), nil
}

func newIssuer(cert *x509.Certificate, signer crypto.Signer, root, cross *x509.Certificate) *Issuer {
	i := &Issuer{Cert: cert, Signer: signer, Root: root, SKI: hex.EncodeToString(cert.SubjectKeyId), Cross: cross}
	for _, c := range []*x509.Certificate{cert, cross} {
		if c != nil {
			i.chainDER = append(i.chainDER, c.Raw)
			i.chainPEM = append(i.chainPEM, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
		}
	}
	return i
}

// WithCross returns a copy of i that sends cross, a cross-signed
// certificate of i's name and key, after its own certificate.
func (i *Issuer) WithCross(cross *x509.Certificate) (*Issuer, error) {
	if !bytes.Equal(cross.RawSubject, i.Cert.RawSubject) || !bytes.Equal(cross.RawSubjectPublicKeyInfo, i.Cert.RawSubjectPublicKeyInfo) {
		return nil, errors.New("ca: the cross-signed certificate is not for the issuing CA's name and key")
	}
	if !cross.IsCA {
		return nil, errors.New("ca: the cross-signed certificate is not a CA")
	}
	return newIssuer(i.Cert, i.Signer, i.Root, cross), nil
}

// Options configure an Authority. Zero values are documented per field.
type Options struct {
	// TrustDomain is the SPIFFE trust domain; every SPIFFE ID issued must
	// be in it. Required.
	TrustDomain string
	// Issuer signs leaves. Nil refuses issuance (ErrNoIssuer) until
	// SetIssuer is called.
	Issuer *Issuer
	// Recorder records each issuance. Required.
	Recorder Recorder
	// MinTTL is the shortest lifetime a request may ask for. Zero means
	// identity.DefaultMinTTL, one minute.
	MinTTL time.Duration
	// Backdate is subtracted from NotBefore for clock skew, at most one
	// minute. Zero means one minute; negative means no backdating.
	Backdate time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Rand is the source for serial numbers and signatures. Nil means
	// crypto/rand.
	Rand io.Reader
	// Logger receives the Authority's operational warnings (a serial
	// collision signed again). It writes no audit lines: the api package
	// writes one per issuance and refusal. Nil discards.
	Logger *slog.Logger
	// PublicHTTP is the base URL of the plain HTTP listener
	// (public_urls.http). When set, every leaf carries the OCSP URL and
	// caIssuers URL (AIA) and a CRL distribution point under it.
	PublicHTTP string
	// Decider is the runtime policy, consulted on every request but the
	// CA's own certificates (SetDecider swaps it). Nil means no policy:
	// everything is allowed.
	Decider Decider
}

// Authority issues leaf certificates.
type Authority struct {
	td       string
	issuer   atomic.Pointer[Issuer]
	rec      Recorder
	minTTL   time.Duration
	backdate time.Duration
	now      func() time.Time
	rand     io.Reader
	log      *slog.Logger
	httpBase string
	decider  atomic.Pointer[Decider]
}

// New validates opts and returns an Authority.
func New(opts Options) (*Authority, error) {
	if err := identity.ValidateTrustDomain(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if opts.Recorder == nil {
		return nil, errors.New("ca: Recorder is required")
	}
	a := &Authority{td: opts.TrustDomain, rec: opts.Recorder, minTTL: opts.MinTTL, backdate: opts.Backdate,
		now: opts.Now, rand: opts.Rand, log: opts.Logger,
		httpBase: strings.TrimSuffix(opts.PublicHTTP, "/")}
	if a.minTTL <= 0 {
		a.minTTL = identity.DefaultMinTTL
	}
	switch {
	case a.backdate == 0:
		a.backdate = time.Minute
	case a.backdate < 0:
		a.backdate = 0
	case a.backdate > time.Minute:
		return nil, errors.New("ca: Backdate is above one minute")
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.rand == nil {
		a.rand = rand.Reader
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.issuer.Store(opts.Issuer)
	a.SetDecider(opts.Decider)
	return a, nil
}

// Issuer returns the CA currently signing leaves.
func (a *Authority) Issuer() *Issuer { return a.issuer.Load() }

// SetIssuer makes iss the CA signing leaves from now on; issuances already
// under way finish with the issuer they started with. A nil iss stops
// issuance (ErrNoIssuer).
func (a *Authority) SetIssuer(iss *Issuer) { a.issuer.Store(iss) }

// TrustDomain returns the SPIFFE trust domain.
func (a *Authority) TrustDomain() string { return a.td }

// Request is everything the Authority needs to issue one leaf.
type Request struct {
	// PublicKey is the leaf's key, usually from a CSR whose signature the
	// caller has verified with ParseCSR.
	PublicKey crypto.PublicKey
	// SPIFFEID is the identity a provisioner vouched for.
	SPIFFEID string
	// DNSNames are extra SANs the provisioner's policy allowed.
	DNSNames []string
	// IPAddresses are IP SANs, used only for the CA's own server
	// certificate.
	IPAddresses []string
	// Provisioner names who vouched; it is recorded.
	Provisioner string
	// TTL is the requested lifetime; zero means DefaultTTL.
	TTL time.Duration
	// DefaultTTL and MaxTTL are the provisioner's limits, already merged
	// with the CA-wide ones. MaxTTL is capped at 24h.
	DefaultTTL, MaxTTL time.Duration
	// JoinToken is the SHA-256 of a join token to consume in the same
	// transaction that records the certificate.
	JoinToken []byte
	// Once are replay keys that must not have been used before.
	Once []string
	// RenewedFrom is the serial of the certificate this one renews.
	RenewedFrom string
	// Task is the task the agent named, recorded with the certificate.
	Task string
	// Claims are the attested claims, recorded with the certificate
	// (and carried to its renewals) for the runtime policy.
	Claims map[string]string
	// CAIdentity is set only for the CA's own certificates (its HTTPS
	// server certificate): without it a SPIFFE ID under the reserved path
	// (identity.ReservedSPIFFEPath) is refused.
	CAIdentity bool
	// Parent is the serial of the node certificate that asked for this
	// workload SVID, recorded with it.
	Parent string
	// Endpoint is what the runtime policy sees as the request's endpoint
	// (policy.EndpointSign, ...), and Environment the request's facts it
	// sees beside its configured environment (the caller's "remote_ip").
	Endpoint    string
	Environment map[string]string
	// PolicyClaims, when not nil, are the claims the runtime policy sees
	// instead of Claims, and are not recorded (a workload SVID's node and
	// selectors).
	PolicyClaims map[string]string
}

// Issued is a recorded leaf certificate.
type Issued struct {
	DER       []byte
	Serial    string
	SPIFFEID  string
	NotBefore time.Time
	NotAfter  time.Time
	Issuer    *Issuer
	// LogLeaf is the certificate's issuance-log entry (its timestamp is
	// the issuance time, NotBefore plus the backdate) and LogIndex its
	// index in the log, assigned when the certificate was recorded.
	LogLeaf  *translog.Leaf
	LogIndex uint64
	// Existing is set when the request was a retry: the certificate is
	// the one the same attestation (or renewal) and key already
	// obtained, not a new one.
	Existing bool
}

// Errors returned by Issue; the API maps them to HTTP status codes.
var (
	ErrTTL      = errors.New("ca: requested lifetime is out of range")
	ErrIdentity = errors.New("ca: identity not allowed")
)

// Issue checks req against policy, signs a leaf and records it. It returns
// an error wrapping ErrDenied, ErrKeyType, ErrTTL, ErrIdentity or a store
// error, and no certificate, when anything is in doubt. IssueDecided also
// returns the runtime policy's decision.
func (a *Authority) Issue(ctx context.Context, req *Request) (*Issued, error) {
	out, _, err := a.IssueDecided(ctx, req)
	return out, err
}

// issue is Issue once the runtime policy has allowed req, with its cap (0
// for none).
func (a *Authority) issue(ctx context.Context, req *Request, cap time.Duration) (*Issued, error) {
	if err := CheckPublicKey(req.PublicKey); err != nil {
		return nil, err
	}
	validate := identity.ValidateWorkloadSPIFFEID
	if req.CAIdentity {
		validate = identity.ValidateSPIFFEID
	}
	if err := validate(req.SPIFFEID, a.td); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	uri, err := url.Parse(req.SPIFFEID)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	ttl, err := a.lifetime(req, cap)
	if err != nil {
		return nil, err
	}
	iss := a.issuer.Load()
	now := a.now().Truncate(time.Second)
	notAfter, err := iss.clampNotAfter(now, now.Add(ttl))
	if err != nil {
		return nil, err
	}
	tmpl, err := leafTemplate(req, uri, now.Add(-a.backdate), notAfter)
	if err != nil {
		return nil, err
	}
	a.addURLs(tmpl, iss)
	return a.signAndRecord(ctx, tmpl, iss, req, now)
}

// addURLs puts the revocation and issuer URLs of iss into tmpl.
func (a *Authority) addURLs(tmpl *x509.Certificate, iss *Issuer) {
	if a.httpBase == "" {
		return
	}
	tmpl.OCSPServer = []string{a.httpBase + "/ocsp"}
	tmpl.IssuingCertificateURL = []string{a.httpBase + "/ca/" + iss.SKI + ".crt"}
	tmpl.CRLDistributionPoints = []string{a.httpBase + "/crl/" + iss.SKI}
}

// serialAttempts bounds the retries after a serial collision (2^-127 per
// pair: a collision means a broken random source as likely as bad luck).
const serialAttempts = 3

// signAndRecord gives tmpl a random serial, signs it with iss and records
// the certificate with what req consumes, in one store transaction. A
// serial the store already holds is replaced and the certificate signed
// again.
func (a *Authority) signAndRecord(ctx context.Context, tmpl *x509.Certificate, iss *Issuer, req *Request, now time.Time) (*Issued, error) {
	for attempt := 1; ; attempt++ {
		serial, err := NewSerial(a.rand)
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = serial
		out, err := a.signAndRecordOnce(ctx, tmpl, iss, req, now)
		if errors.Is(err, store.ErrDuplicateSerial) && attempt < serialAttempts {
			a.log.Warn("serial collision; signing again with a new serial", "serial", serial.Text(16))
			continue
		}
		return out, err
	}
}

func (a *Authority) signAndRecordOnce(ctx context.Context, tmpl *x509.Certificate, iss *Issuer, req *Request, now time.Time) (*Issued, error) {
	der, err := x509.CreateCertificate(a.rand, tmpl, iss.Cert, req.PublicKey, iss.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	out := &Issued{DER: der, Serial: hex.EncodeToString(tmpl.SerialNumber.Bytes()), SPIFFEID: req.SPIFFEID,
		NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, Issuer: iss}
	// The log leaf's timestamp is the issuance time (whole seconds, in
	// milliseconds as RFC 6962 counts them): NotBefore plus the
	// backdate, so a certificate alone is enough to find its entry.
	leaf, err := translog.NewLeaf(der, uint64(now.UnixMilli()))
	if err != nil {
		return nil, fmt.Errorf("ca: log leaf: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	rec := &store.Issuance{
		Certificate: store.Certificate{
			Serial: out.Serial, SPIFFEID: req.SPIFFEID, DNSNames: req.DNSNames, Provisioner: req.Provisioner,
			IssuerSKI: iss.SKI, NotBefore: out.NotBefore, NotAfter: out.NotAfter, DER: der,
			RenewedFrom: req.RenewedFrom, Task: req.Task, PublicKeySHA256: store.PublicKeySHA256(spki), Claims: req.Claims, Parent: req.Parent,
		},
		JoinToken: req.JoinToken,
		Once:      req.Once,
		Now:       now,
		LogLeaf:   leaf,
	}
	if err := a.rec.Issue(ctx, rec); err != nil {
		var prev *store.AlreadyIssuedError
		if errors.As(err, &prev) {
			return existing(&prev.Certificate, iss, err)
		}
		return nil, err
	}
	out.LogLeaf, out.LogIndex = leaf, rec.Certificate.LogIndex
	return out, nil
}

// existing is the Issued of a certificate a retried request already
// obtained (the store's *AlreadyIssuedError, err), with its log leaf for
// the receipt. One made by another issuing CA than iss is refused with
// err: its chain is no longer the one this CA serves.
func existing(c *store.Certificate, iss *Issuer, err error) (*Issued, error) {
	if !strings.EqualFold(c.IssuerSKI, iss.SKI) || !c.Logged() {
		return nil, err
	}
	leaf, lerr := translog.NewLeaf(c.DER, c.LogTimestamp)
	if lerr != nil {
		return nil, fmt.Errorf("ca: log leaf: %w", lerr)
	}
	return &Issued{DER: c.DER, Serial: c.Serial, SPIFFEID: c.SPIFFEID, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		Issuer: iss, LogLeaf: leaf, LogIndex: c.LogIndex, Existing: true}, nil
}

// ResponderProvisioner names OCSP responder certificates in the store.
const ResponderProvisioner = "agentca-ocsp"

// IssueResponder issues a delegated OCSP responder certificate for pub
// from the current issuer (extended key usage OCSPSigning, the
// id-pkix-ocsp-nocheck extension, no SAN) living ttl, and records it.
func (a *Authority) IssueResponder(ctx context.Context, pub crypto.PublicKey, ttl time.Duration) (*Issued, error) {
	return a.IssueResponderFrom(ctx, a.issuer.Load(), pub, ttl)
}

// IssueResponderFrom is IssueResponder with a given issuer: each issuing
// CA that still has unexpired leaves (the active one and those retiring)
// needs its own delegated responder.
func (a *Authority) IssueResponderFrom(ctx context.Context, iss *Issuer, pub crypto.PublicKey, ttl time.Duration) (*Issued, error) {
	now := a.now().Truncate(time.Second)
	notAfter, err := iss.clampNotAfter(now, now.Add(ttl))
	if err != nil {
		return nil, err
	}
	tmpl, err := responderTemplate(iss, pub, now.Add(-a.backdate), notAfter)
	if err != nil {
		return nil, err
	}
	return a.signAndRecord(ctx, tmpl, iss, &Request{PublicKey: pub, Provisioner: ResponderProvisioner}, now)
}
