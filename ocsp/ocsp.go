// Package ocsp is agentca's OCSP responder (RFC 6960, with the RFC 5019
// profile). Responses are signed by a delegated responder certificate per
// issuing CA (extended key usage OCSPSigning, id-pkix-ocsp-nocheck), built
// with golang.org/x/crypto/ocsp, cached per serial as encoded bytes, and
// re-signed once two thirds of their validity has passed or at once when
// the certificate is revoked.
//
// Answers: good or revoked (time, reason) for a certificate this CA
// issued; unknown for a serial it never issued; the OCSP "unauthorized"
// status for an issuer it does not serve; "malformedRequest" for anything
// that does not parse, and for a request naming more than one certificate
// (never a response for the first only). It never answers with an HTTP
// 500.
//
// Not supported: nonces. golang.org/x/crypto/ocsp can only place
// extensions in singleExtensions, while RFC 8954 puts the nonce in
// responseExtensions; a request's nonce is ignored, as RFC 5019 allows, and
// the cached response is served.
package ocsp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RFC 6960 CertID hashes
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/store"
	"go.step.sm/crypto/keyutil"
	xocsp "golang.org/x/crypto/ocsp"
)

// Store is what the responder reads.
type Store interface {
	Certificate(ctx context.Context, serial string) (*store.Certificate, error)
}

// Signer is one issuing CA's delegated responder.
type Signer struct {
	// Issuer is the issuing CA certificate.
	Issuer *x509.Certificate
	// Cert is the responder certificate, issued by Issuer.
	Cert *x509.Certificate
	// Key signs responses; it matches Cert.
	Key crypto.Signer
}

// issuerState is an issuer with its CertID hashes and current responder.
type issuerState struct {
	ski      string
	keyHash  map[crypto.Hash][]byte
	nameHash map[crypto.Hash][]byte
	signer   atomic.Pointer[Signer]
}

// Options configure a Responder.
type Options struct {
	Store Store
	// Validity is nextUpdate - thisUpdate; zero means 5 minutes.
	Validity time.Duration
	// Now nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Fresh, when set, says whether every revocation committed to the
	// store has reached this responder recently enough (a replica
	// following a shared store, store/etcd's FreshAt). While it is
	// false, a cached "good" is not served: the status is read from the
	// store again and signed (or the request answered tryLater when the
	// store cannot be read). A cached "revoked" is always served:
	// revocation is final. Nil means always fresh (one process owns the
	// store, and every revocation passes through Revoked).
	Fresh func() bool
}

// Responder answers OCSP requests.
type Responder struct {
	opts Options

	mu      sync.RWMutex
	issuers []*issuerState

	cache   sync.Map // cacheKey → *entry
	group   sync.Map // cacheKey → *flight (one signing at a time per key)
	revoked sync.Map // issuerSKI/serial → time.Time: revocations seen, with the certificate's notAfter
	// unknowns counts the cached answers for serials this CA never
	// issued, bounded by maxUnknown.
	unknowns atomic.Int64

	hits atomic.Uint64 // answers served from the cache (Stats)
}

// Stats are the responder's counters since it started.
type Stats struct {
	// CacheHits counts answers served from the cache of signed
	// responses, without a store read or a signature.
	CacheHits uint64
}

// Stats returns the counters.
func (r *Responder) Stats() Stats { return Stats{CacheHits: r.hits.Load()} }

// Signers returns each served issuer's current delegated responder.
func (r *Responder) Signers() []*Signer {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Signer, 0, len(r.issuers))
	for _, is := range r.issuers {
		if s := is.signer.Load(); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// maxUnknown bounds the cached "unknown" answers: a relying service that
// asks again about a certificate this CA never issued gets the answer
// signed the first time, and a caller asking for ever-new serials cannot
// grow the cache past this (beyond it, unknown answers are signed per
// request, as before).
const maxUnknown = 10_000

// Response is a signed response with the values HTTP caching needs.
type Response struct {
	// Status is the certificate status answered: xocsp.Good, Revoked or
	// Unknown.
	Status     int
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
	ETag       string
}

type entry struct {
	resp    *Response
	renew   time.Time // re-sign after this
	revoked bool
	unknown bool // counted in Responder.unknowns
}

type flight struct {
	done chan struct{}
	resp *Response
	err  error
}

// New returns a Responder with no issuer; add them with SetSigner.
func New(opts Options) (*Responder, error) {
	if opts.Store == nil {
		return nil, errors.New("ocsp: Store is required")
	}
	if opts.Validity <= 0 {
		opts.Validity = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Responder{opts: opts}, nil
}

// SetSigner installs or replaces the responder for s.Issuer. Cached
// responses signed by an earlier responder stay valid until they are due.
func (r *Responder) SetSigner(s *Signer) error {
	if err := s.Cert.CheckSignatureFrom(s.Issuer); err != nil {
		return fmt.Errorf("ocsp: responder certificate not issued by the CA: %w", err)
	}
	if err := keyutil.VerifyPair(s.Cert.PublicKey, s.Key); err != nil {
		return fmt.Errorf("ocsp: responder key does not match its certificate: %w", err)
	}
	switch s.Key.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return fmt.Errorf("ocsp: responder key %T: x/crypto/ocsp signs with ECDSA or RSA only", s.Key.Public())
	}
	if !slices.Contains(s.Cert.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
		return errors.New("ocsp: responder certificate lacks the OCSPSigning extended key usage")
	}
	ski := hex.EncodeToString(s.Issuer.SubjectKeyId)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, is := range r.issuers {
		if is.ski == ski {
			is.signer.Store(s)
			return nil
		}
	}
	is, err := newIssuerState(s.Issuer)
	if err != nil {
		return err
	}
	is.signer.Store(s)
	r.issuers = append(r.issuers, is)
	return nil
}

// RemoveIssuer stops answering for the issuing CA with subject key
// identifier ski (hex): its anchor was retired. Its requests then get the
// unauthorized response, as for any CA this responder does not serve.
func (r *Responder) RemoveIssuer(ski string) {
	r.mu.Lock()
	r.issuers = slices.DeleteFunc(r.issuers, func(is *issuerState) bool { return is.ski == ski })
	r.mu.Unlock()
	prefix := ski + "/"
	r.cache.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			r.cache.Delete(k)
		}
		return true
	})
}

func newIssuerState(iss *x509.Certificate) (*issuerState, error) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(iss.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("ocsp: issuer key: %w", err)
	}
	is := &issuerState{ski: hex.EncodeToString(iss.SubjectKeyId), keyHash: map[crypto.Hash][]byte{}, nameHash: map[crypto.Hash][]byte{}}
	k1, n1 := sha1.Sum(spki.PublicKey.RightAlign()), sha1.Sum(iss.RawSubject) //nolint:gosec
	k2, n2 := sha256.Sum256(spki.PublicKey.RightAlign()), sha256.Sum256(iss.RawSubject)
	is.keyHash[crypto.SHA1], is.nameHash[crypto.SHA1] = k1[:], n1[:]
	is.keyHash[crypto.SHA256], is.nameHash[crypto.SHA256] = k2[:], n2[:]
	return is, nil
}

func (r *Responder) issuerFor(req *xocsp.Request) *issuerState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, is := range r.issuers {
		if string(is.keyHash[req.HashAlgorithm]) == string(req.IssuerKeyHash) &&
			string(is.nameHash[req.HashAlgorithm]) == string(req.IssuerNameHash) {
			return is
		}
	}
	return nil
}

// Pre-encoded error responses (RFC 6960 §2.3): unsigned, so they are
// constants.
var (
	MalformedResponse    = xocsp.MalformedRequestErrorResponse
	UnauthorizedResponse = xocsp.UnauthorizedErrorResponse
	InternalResponse     = xocsp.InternalErrorErrorResponse
	TryLaterResponse     = xocsp.TryLaterErrorResponse
)

// Respond answers one DER-encoded request. It returns a signed response, or
// one of the unsigned error responses; the error is for logging only.
func (r *Responder) Respond(ctx context.Context, der []byte) (*Response, []byte, error) {
	req, err := xocsp.ParseRequest(der)
	if err != nil {
		return nil, MalformedResponse, fmt.Errorf("ocsp: malformed request: %w", err)
	}
	if n, err := requestCount(der); err != nil || n != 1 {
		if err == nil {
			err = errSeveral
		}
		return nil, MalformedResponse, err
	}
	if req.HashAlgorithm != crypto.SHA1 && req.HashAlgorithm != crypto.SHA256 {
		return nil, MalformedResponse, fmt.Errorf("ocsp: unsupported CertID hash %v", req.HashAlgorithm)
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 || req.SerialNumber.BitLen() > 160 {
		return nil, MalformedResponse, errors.New("ocsp: serial number out of range")
	}
	is := r.issuerFor(req)
	if is == nil {
		return nil, UnauthorizedResponse, errors.New("ocsp: request for an issuer this responder does not serve")
	}
	resp, err := r.response(ctx, is, req.HashAlgorithm, req.SerialNumber)
	if err != nil {
		// The store cannot be read now (etcd without quorum, a
		// timeout): tryLater tells the client the status exists but
		// is unavailable for the moment (RFC 6960 §2.3).
		if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return nil, TryLaterResponse, err
		}
		if errors.Is(err, store.ErrDamaged) {
			r.opts.Logger.Error("OCSP: the store cannot be read", "err", err)
			return nil, TryLaterResponse, err
		}
		return nil, InternalResponse, err
	}
	return resp, resp.DER, nil
}

// Lookup returns the current response (SHA-1 CertID, the common default)
// for a serial of the issuer whose SKI is issuerSKI (hex), for stapling;
// it signs one if needed.
func (r *Responder) Lookup(ctx context.Context, issuerSKI string, serial *big.Int) (*Response, error) {
	is := r.issuerBySKI(issuerSKI)
	if is == nil {
		return nil, errors.New("ocsp: unknown issuer")
	}
	return r.response(ctx, is, crypto.SHA1, serial)
}

func (r *Responder) issuerBySKI(ski string) *issuerState {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, s := range r.issuers {
		if s.ski == ski {
			return s
		}
	}
	return nil
}

// cacheKey names a response: the issuer, the CertID hash (the response
// echoes the request's CertID) and the serial.
func cacheKey(ski string, h crypto.Hash, serial string) string {
	return ski + "/" + strconv.Itoa(int(h)) + "/" + serial
}

func (r *Responder) response(ctx context.Context, is *issuerState, h crypto.Hash, serial *big.Int) (*Response, error) {
	key := cacheKey(is.ski, h, hex.EncodeToString(serial.Bytes()))
	fresh := r.opts.Fresh == nil || r.opts.Fresh()
	if resp := r.cached(key, fresh); resp != nil {
		return resp, nil
	}
	return r.sign(ctx, is, h, serial, key, fresh)
}

// cached returns the cached response for key unless it is due for
// re-signing, or it says good and the responder is not fresh.
func (r *Responder) cached(key string, fresh bool) *Response {
	if v, ok := r.cache.Load(key); ok {
		if e := v.(*entry); r.opts.Now().Before(e.renew) && (fresh || e.revoked) {
			r.hits.Add(1)
			return e.resp
		}
	}
	return nil
}

// sign makes a fresh response; concurrent callers for the same key share
// one signature.
func (r *Responder) sign(ctx context.Context, is *issuerState, h crypto.Hash, serial *big.Int, key string, fresh bool) (*Response, error) {
	f := &flight{done: make(chan struct{})}
	if v, loaded := r.group.LoadOrStore(key, f); loaded {
		other := v.(*flight)
		select {
		case <-other.done:
			return other.resp, other.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() {
		r.group.Delete(key)
		close(f.done)
	}()
	// Another flight may have filled the cache since our first look.
	if resp := r.cached(key, fresh); resp != nil {
		f.resp = resp
		return resp, nil
	}
	f.resp, f.err = r.signNow(ctx, is, h, serial, key)
	return f.resp, f.err
}

func (r *Responder) signNow(ctx context.Context, is *issuerState, h crypto.Hash, serial *big.Int, key string) (*Response, error) {
	sn := hex.EncodeToString(serial.Bytes())
	rec, err := r.opts.Store.Certificate(ctx, sn)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("ocsp: %w", err)
	}
	now := r.opts.Now().UTC().Truncate(time.Second)
	tmpl := xocsp.Response{SerialNumber: serial, ThisUpdate: now, NextUpdate: now.Add(r.opts.Validity), IssuerHash: h}
	known := err == nil && rec.IssuerSKI == is.ski
	switch {
	case !known:
		tmpl.Status = xocsp.Unknown
	case rec.Revoked():
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = xocsp.Revoked, rec.RevokedAt.UTC(), rec.RevocationReason
	default:
		tmpl.Status = xocsp.Good
	}
	s := is.signer.Load()
	tmpl.Certificate = s.Cert
	der, err := xocsp.CreateResponse(s.Issuer, s.Cert, tmpl, s.Key)
	if err != nil {
		return nil, fmt.Errorf("ocsp: sign: %w", err)
	}
	sum := sha256.Sum256(der)
	resp := &Response{Status: tmpl.Status, DER: der, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate, ETag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	// A "good" read from the store before a revocation landed must not
	// replace what Revoked put there: revocation is final. Unknown
	// serials are cached up to maxUnknown: anyone can ask for any number
	// of them, and the cache must stay bounded.
	_, revoked := r.revoked.Load(is.ski + "/" + sn)
	renew := tmpl.ThisUpdate.Add(r.opts.Validity * 2 / 3)
	switch {
	case known && (tmpl.Status == xocsp.Revoked || !revoked):
		if old, loaded := r.cache.Swap(key, &entry{resp: resp, renew: renew, revoked: tmpl.Status == xocsp.Revoked}); loaded && old.(*entry).unknown {
			r.unknowns.Add(-1)
		}
	case !known:
		if _, loaded := r.cache.Load(key); loaded || r.unknowns.Add(1) <= maxUnknown {
			if old, loaded := r.cache.Swap(key, &entry{resp: resp, renew: renew, unknown: true}); loaded && old.(*entry).unknown {
				r.unknowns.Add(-1)
			}
		} else {
			r.unknowns.Add(-1)
		}
	}
	return resp, nil
}

// Revoked makes the revocation of rec visible at once: it marks the
// serial revoked (so no good response signed before the revocation can be
// cached any more), drops its cached responses, and signs the revoked one.
func (r *Responder) Revoked(ctx context.Context, rec *store.Certificate) {
	r.revoked.Store(rec.IssuerSKI+"/"+rec.Serial, rec.NotAfter)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		if old, loaded := r.cache.LoadAndDelete(cacheKey(rec.IssuerSKI, h, rec.Serial)); loaded && old.(*entry).unknown {
			r.unknowns.Add(-1)
		}
	}
	serial, ok := new(big.Int).SetString(rec.Serial, 16)
	is := r.issuerBySKI(rec.IssuerSKI)
	if !ok || is == nil {
		return
	}
	// Sign outside the shared flight: a flight already running may have
	// read the record before the revocation.
	if _, err := r.signNow(ctx, is, crypto.SHA1, serial, cacheKey(is.ski, crypto.SHA1, rec.Serial)); err != nil {
		r.opts.Logger.Warn("OCSP re-sign after revocation failed; the next request signs it", "serial", rec.Serial, "err", err)
	}
}

// Forget drops cached responses whose nextUpdate is before cutoff: no one
// asked for them for a whole validity period. It keeps the cache bounded
// by the certificates relying services still check. It also drops the
// revocation marks of certificates expired for a whole validity period
// (whatever cutoff is): no response signed before their revocation can
// still be in flight, so the set of marks shrinks with the certificates
// that matter.
func (r *Responder) Forget(cutoff time.Time) int {
	n := 0
	r.cache.Range(func(k, v any) bool {
		if e := v.(*entry); e.resp.NextUpdate.Before(cutoff) {
			if r.cache.CompareAndDelete(k, v) && e.unknown {
				r.unknowns.Add(-1)
			}
			n++
		}
		return true
	})
	expired := r.opts.Now().Add(-r.opts.Validity)
	r.revoked.Range(func(k, v any) bool {
		if notAfter, ok := v.(time.Time); ok && notAfter.Before(expired) {
			r.revoked.Delete(k)
		}
		return true
	})
	return n
}
