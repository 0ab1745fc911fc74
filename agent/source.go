package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Source. Zero values are documented per field.
type Config struct {
	// CAURL is the CA's HTTPS URL. Required.
	CAURL string
	// Roots are the trust anchors known at start (from --root or a
	// fingerprint bootstrap). Required.
	Roots []*x509.Certificate
	// Initial credentials to start from (loaded from disk); nil means
	// enroll first.
	Initial *Credentials
	// Provisioner and Attest enroll: Attest returns the attestation token
	// each time the Source must enroll (at start without Initial, or after
	// the certificate expired). Nil Attest means the Source cannot
	// re-enroll and stops with ErrExpired when its certificate expires.
	Provisioner string
	Attest      func(ctx context.Context) (string, error)
	// Task, when set, names the task the certificates are for: the CA
	// records it (renewals keep it), it appears in access tokens, and
	// `agentca task end` revokes every certificate issued for it.
	Task string
	// KeyType of new keys; empty means ec-p256.
	KeyType string
	// TTL asked for; zero means the CA's default.
	TTL time.Duration
	// ReuseKey renews with the current key instead of a fresh one.
	ReuseKey bool
	// Dir, when set, receives cert.pem, key.pem and bundle.pem after each
	// enrollment and renewal (key first, then certificate, then bundle).
	Dir string
	// OnRenew is called after each new certificate is in place.
	OnRenew func(*Credentials)
	// RenewAt is the fraction of the remaining lifetime after which to
	// renew; zero means 2/3. Jitter is ± that fraction of the wait; zero
	// means 0.1.
	RenewAt, Jitter float64
	// MinBackoff and MaxBackoff bound the retry delay after a failure;
	// zero means 1s and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger nil discards.
	Logger *slog.Logger
	// LogKey, when set, is the CA's issuance-log key: every new
	// certificate must come with a receipt proving it is in the log
	// (VerifyReceipt), or it is refused and the renewal retried.
	LogKey crypto.PublicKey
	// FederatesWith names foreign trust domains ("b.example") the CA is
	// federated with whose peers this Source may authorise: their
	// bundles are fetched from the CA (/v1/bundle?trust_domain=…) with
	// the own bundle, served by GetX509BundleForTrustDomain and, with Dir,
	// written as bundle.<td>.pem (federation.go). Nil: the own trust
	// domain only.
	FederatesWith []string
}

// ErrExpired is returned by Err when the certificate expired and the Source
// could not enroll again.
var ErrExpired = errors.New("agent: certificate expired and no attestation to enroll again")

// Source keeps a fresh certificate and the current trust bundle. Its
// methods are safe for concurrent use.
type Source struct {
	cfg    Config
	client *Client
	log    *slog.Logger

	creds      atomic.Pointer[Credentials]
	trust      atomic.Pointer[trustState]
	staple     atomic.Pointer[staple]
	now        chan struct{}
	stapleKick chan struct{}
	// pending is the key of the attempt under way (pending.go).
	pending crypto.Signer
	// federated are the bundles of cfg.FederatesWith (federation.go).
	federatesWith []spiffeid.TrustDomain
	federated     atomic.Pointer[federatedState]

	cancel context.CancelFunc
	done   chan struct{}
	errMu  sync.Mutex
	err    error
}

type trustState struct {
	roots []*x509.Certificate
	pool  *x509.CertPool
	// seq is the bundle's spiffe_sequence (0: the configured roots).
	seq uint64
}

func newTrustState(roots []*x509.Certificate) *trustState {
	p := x509.NewCertPool()
	for _, r := range roots {
		p.AddCert(r)
	}
	return &trustState{roots: roots, pool: p}
}

// NewSource enrolls (unless cfg.Initial is set and still valid), then
// renews in the background until Close. It returns once the Source holds a
// certificate.
func NewSource(ctx context.Context, cfg Config) (*Source, error) {
	if len(cfg.Roots) == 0 {
		return nil, errors.New("agent: Config.Roots is required")
	}
	if cfg.RenewAt <= 0 || cfg.RenewAt >= 1 {
		cfg.RenewAt = 2.0 / 3
	}
	if cfg.Jitter <= 0 || cfg.Jitter >= 1 {
		cfg.Jitter = 0.1
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.KeyType == "" {
		cfg.KeyType = "ec-p256"
	}
	var err error
	s := &Source{cfg: cfg, log: cfg.Logger, now: make(chan struct{}, 1), stapleKick: make(chan struct{}, 1), done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.trust.Store(newTrustState(cfg.Roots))
	if s.federatesWith, err = ParseTrustDomains(cfg.FederatesWith); err != nil {
		return nil, err
	}
	client, err := NewClient(cfg.CAURL, s.trust.Load().pool)
	if err != nil {
		return nil, err
	}
	s.client = client
	if cfg.Initial != nil && time.Now().Before(cfg.Initial.NotAfter) {
		s.creds.Store(cfg.Initial)
	} else {
		if err := s.enroll(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := s.refreshFederated(ctx); err != nil {
		s.log.Warn("could not fetch every federated trust domain's bundle; their peers are refused until it is", "err", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	var helpers sync.WaitGroup
	helpers.Go(func() { s.stapleLoop(loopCtx) })
	helpers.Go(func() { s.bundleLoop(loopCtx) })
	go func() {
		s.loop(loopCtx)
		cancel() // the staple and bundle loops end with the renewal loop
		helpers.Wait()
		close(s.done)
	}()
	return s, nil
}

// Current returns the credentials in use now.
func (s *Source) Current() *Credentials { return s.creds.Load() }

// Roots returns the current trust anchors.
func (s *Source) Roots() []*x509.Certificate { return s.trust.Load().roots }

// Pool returns the current trust anchors as a pool.
func (s *Source) Pool() *x509.CertPool { return s.trust.Load().pool }

// RenewNow asks the background loop to renew at once.
func (s *Source) RenewNow() {
	select {
	case s.now <- struct{}{}:
	default:
	}
}

// Done is closed when the Source has stopped: after Close, or when its
// certificate expired and it could not enroll again (see Err).
func (s *Source) Done() <-chan struct{} { return s.done }

// Err returns why the Source stopped, nil after Close.
func (s *Source) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// Close stops the background loop and waits for it.
func (s *Source) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// GetClientCertificate is a tls.Config hook for clients.
func (s *Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.creds.Load().TLSCertificate(), nil
}

func (s *Source) enroll(ctx context.Context) error {
	if s.cfg.Attest == nil {
		return ErrExpired
	}
	token, err := s.cfg.Attest(ctx)
	if err != nil {
		return &attestError{err}
	}
	key, err := s.attemptKey()
	if err != nil {
		return err
	}
	cr, err := s.client.SignForTask(ctx, s.cfg.Provisioner, token, key, s.cfg.TTL, s.cfg.Task)
	if err != nil {
		return err
	}
	s.log.Info("enrolled", "serial", cr.Serial, "spiffe_id", cr.SPIFFEID, "not_after", cr.NotAfter.Format(time.RFC3339))
	return s.install(ctx, cr)
}

func (s *Source) renew(ctx context.Context) error {
	cur := s.creds.Load()
	var newKey crypto.Signer // nil keeps the current key
	if !s.cfg.ReuseKey {
		// The same key until this renewal succeeds (pending.go).
		k, err := s.attemptKey()
		if err != nil {
			return err
		}
		newKey = k
	}
	cr, err := s.client.Renew(ctx, cur.TLSCertificate(), newKey, s.cfg.TTL)
	if err != nil {
		return err
	}
	s.log.Info("renewed", "serial", cr.Serial, "spiffe_id", cr.SPIFFEID, "not_after", cr.NotAfter.Format(time.RFC3339), "renewed_from", cur.Serial)
	return s.install(ctx, cr)
}

// Bounds of the bundle refresh between renewals: the CA's
// spiffe_refresh_hint, or defaultBundleRefresh without one, kept within
// [minBundleRefresh, maxBundleRefresh].
const (
	defaultBundleRefresh = 5 * time.Minute
	minBundleRefresh     = time.Second
	maxBundleRefresh     = time.Hour
)

// bundleLoop refreshes the trust bundle from /v1/bundle as often as its
// spiffe_refresh_hint says, so that a newly staged anchor is trusted even
// between renewals.
func (s *Source) bundleLoop(ctx context.Context) {
	// The first fetch, right away, learns the refresh hint.
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		// After a failure, retry within 30 s, never in a tight loop.
		retry := min(max(wait, 5*time.Second), 30*time.Second)
		id, err := spiffeid.FromString(s.creds.Load().SPIFFEID)
		if err != nil {
			s.log.Warn("cannot refresh the trust bundle", "err", err)
			wait = retry
			continue
		}
		b, err := s.refreshBundle(ctx, id.TrustDomain())
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("could not refresh the trust bundle; keeping the current one", "err", err)
			}
			wait = retry
			continue
		}
		if s.cfg.Dir != "" {
			if err := WriteBundle(s.cfg.Dir, s.Roots()); err != nil {
				s.log.Warn("could not write the trust bundle", "err", err)
			}
		}
		wait = defaultBundleRefresh
		if b.RefreshHint > 0 {
			wait = b.RefreshHint
		}
		if hint, err := s.refreshFederated(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("could not refresh a federated trust domain's bundle; keeping the current one", "err", err)
			wait = min(wait, retry)
		} else if hint > 0 {
			wait = min(wait, hint)
		}
		wait = min(max(wait, minBundleRefresh), maxBundleRefresh)
	}
}

// refreshBundle fetches the bundle and makes its roots the trust anchors,
// for peers and for the CA, unless a newer bundle (a higher
// spiffe_sequence, fetched concurrently by the renewal or the refresh
// loop) is installed already.
func (s *Source) refreshBundle(ctx context.Context, td spiffeid.TrustDomain) (*Bundle, error) {
	b, err := s.client.Bundle(ctx, td)
	if err != nil {
		return nil, err
	}
	next := newTrustState(b.Roots)
	next.seq = b.Sequence
	for {
		cur := s.trust.Load()
		if cur.seq > next.seq {
			return b, nil
		}
		if s.trust.CompareAndSwap(cur, next) {
			s.client.setRoots(s.trust.Load().pool)
			return b, nil
		}
	}
}

// install checks the log receipt, refreshes the bundle, writes the files
// and swaps in cr.
func (s *Source) install(ctx context.Context, cr *Credentials) error {
	if s.cfg.LogKey != nil {
		if err := VerifyReceipt(cr, s.cfg.LogKey); err != nil {
			return err
		}
	}
	if id, err := spiffeid.FromString(cr.SPIFFEID); err != nil {
		s.log.Warn("cannot refresh the trust bundle", "err", err)
	} else if _, err := s.refreshBundle(ctx, id.TrustDomain()); err != nil {
		s.log.Warn("could not refresh the trust bundle; keeping the current one", "err", err)
	}
	if s.cfg.Dir != "" {
		if err := WriteFiles(s.cfg.Dir, cr, s.Roots()); err != nil {
			return err
		}
	}
	s.creds.Store(cr)
	s.installed(cr)
	select {
	case s.stapleKick <- struct{}{}:
	default:
	}
	if s.cfg.OnRenew != nil {
		s.cfg.OnRenew(cr)
	}
	return nil
}

// nextRenewal is when to renew credentials received at got: RenewAt of the
// remaining lifetime, ± Jitter of it.
func (s *Source) nextRenewal(cr *Credentials, got time.Time) time.Time {
	remaining := cr.NotAfter.Sub(got)
	wait := time.Duration(float64(remaining) * s.cfg.RenewAt)
	jitter := time.Duration((rand.Float64()*2 - 1) * s.cfg.Jitter * float64(wait))
	return got.Add(wait + jitter)
}

func (s *Source) loop(ctx context.Context) {
	got := time.Now()
	if cr := s.creds.Load(); cr.NotBefore.After(got) {
		got = cr.NotBefore
	}
	backoff := s.cfg.MinBackoff
	next := s.nextRenewal(s.creds.Load(), got)
	for {
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.now:
			timer.Stop()
		case <-timer.C:
		}
		cur := s.creds.Load()
		var err error
		if time.Now().Before(cur.NotAfter) {
			err = s.renew(ctx)
		} else {
			s.log.Warn("certificate expired; enrolling again", "serial", cur.Serial, "not_after", cur.NotAfter.Format(time.RFC3339))
			err = s.enroll(ctx)
			var ae *APIError
			var re *attestError
			if errors.Is(err, ErrExpired) {
				s.stop(err)
				return
			}
			if errors.As(err, &re) {
				// The attestation cannot be re-read (a spent --token, a
				// missing --token-file): retrying would loop forever.
				s.stop(fmt.Errorf("%w: %v", ErrExpired, err))
				return
			}
			if errors.As(err, &ae) && !ae.Temporary() {
				s.stop(fmt.Errorf("%w: enrolling again failed: %v", ErrExpired, err))
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = s.cfg.MinBackoff
			next = s.nextRenewal(s.creds.Load(), time.Now())
			continue
		}
		var ae *APIError
		if errors.As(err, &ae) && (ae.Code == "certificate_revoked" || ae.Code == "renewal_reused") {
			s.stop(fmt.Errorf("agent: renewal refused: %w", err))
			return
		}
		s.log.Warn("renewal failed; retrying", "err", err, "in", backoff.String())
		next = time.Now().Add(backoff)
		if exp := cur.NotAfter; next.After(exp) && time.Now().Before(exp) {
			next = exp // try the re-enrollment path right at expiry
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

// attestError is a failure to obtain the attestation itself (Config.Attest
// failed), as opposed to the CA refusing or not answering.
type attestError struct{ err error }

func (e *attestError) Error() string { return "agent: reading the attestation: " + e.err.Error() }
func (e *attestError) Unwrap() error { return e.err }

func (s *Source) stop(err error) {
	s.errMu.Lock()
	s.err = err
	s.errMu.Unlock()
	s.log.Error("stopping", "err", err)
}
