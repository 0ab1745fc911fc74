// Package crl builds and publishes the certificate revocation list of an
// issuing CA: a v2 CRL with the authority key identifier, a CRL number
// derived from thisUpdate (as Boulder does, so there is no counter to
// lose), a short nextUpdate, and one entry per revoked certificate that
// has not expired yet.
//
// A Publisher keeps the current CRL as encoded bytes. It rebuilds it
// shortly after it is told of a revocation (debounced, so a burst of
// revocations costs one build) and before nextUpdate. It does not serve
// HTTP: the api package serves GET /crl and /crl/<issuer SKI> from the
// publishers it is given (api.CRLs).
package crl

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
)

// Source lists an issuer's revocations.
type Source interface {
	Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]store.Revocation, error)
}

// Options configure a Publisher.
type Options struct {
	Issuer *ca.Issuer
	Source Source
	// Validity is nextUpdate - thisUpdate; zero means 10 minutes.
	Validity time.Duration
	// Debounce is how long after a revocation the CRL is rebuilt, so a
	// burst costs one build; zero means 100 ms. It must stay well under
	// a second: a revocation shows in the CRL within Debounce plus one
	// build.
	Debounce time.Duration
	// Now nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// CRL is one published revocation list.
type CRL struct {
	DER        []byte
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	// ETag is a strong validator of DER.
	ETag string
}

// Publisher keeps an issuer's current CRL.
type Publisher struct {
	opts Options
	cur  atomic.Pointer[CRL]
	kick chan struct{}

	mu   sync.Mutex // serialises builds so numbers stay increasing
	last *big.Int

	builds atomic.Uint64
}

// New checks opts and returns a Publisher; call Build once before serving
// and Run to keep the CRL current.
func New(opts Options) (*Publisher, error) {
	if opts.Issuer == nil || opts.Source == nil {
		return nil, errors.New("crl: Issuer and Source are required")
	}
	if opts.Validity <= 0 {
		opts.Validity = 10 * time.Minute
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{opts: opts, kick: make(chan struct{}, 1), last: new(big.Int)}, nil
}

// Issuer returns the CA whose CRL this is.
func (p *Publisher) Issuer() *ca.Issuer { return p.opts.Issuer }

// Builds counts the CRLs this Publisher built and published.
func (p *Publisher) Builds() uint64 { return p.builds.Load() }

// Current returns the latest CRL, nil before the first Build.
func (p *Publisher) Current() *CRL { return p.cur.Load() }

// Changed tells the Publisher that a revocation happened; the CRL is
// rebuilt after the debounce delay.
func (p *Publisher) Changed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Build makes a new CRL from the store and publishes it.
func (p *Publisher) Build(ctx context.Context) (*CRL, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	clock := p.opts.Now()
	now := clock.UTC().Truncate(time.Second)
	revs, err := p.opts.Source.Revocations(ctx, p.opts.Issuer.SKI, now)
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	entries := make([]x509.RevocationListEntry, 0, len(revs))
	for _, r := range revs {
		sn, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("crl: bad serial %q in store", r.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: sn, RevocationTime: r.RevokedAt.UTC(), ReasonCode: r.Reason})
	}
	// The CRL number is the build time in nanoseconds (thisUpdate is
	// that time cut to the second): strictly increasing here without a
	// stored counter, and across replicas whose clocks agree better than
	// the time between two builds; two replicas building in the same
	// second still get different numbers.
	number := big.NewInt(clock.UnixNano())
	if number.Cmp(p.last) <= 0 {
		number = new(big.Int).Add(p.last, big.NewInt(1))
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(p.opts.Validity),
	}
	iss := p.opts.Issuer
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, iss.Cert, iss.Signer)
	if err != nil {
		return nil, fmt.Errorf("crl: sign: %w", err)
	}
	sum := sha256.Sum256(der)
	c := &CRL{DER: der, Number: number, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate, Entries: len(entries),
		ETag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	p.last = number
	p.cur.Store(c)
	p.builds.Add(1)
	return c, nil
}

// Run rebuilds the CRL after each Changed (debounced) and at two thirds of
// its validity, until ctx is done. A failed build is retried after a
// second; the previous CRL stays published meanwhile.
func (p *Publisher) Run(ctx context.Context) {
	for {
		wait := time.Second
		if c := p.cur.Load(); c != nil {
			wait = max(c.ThisUpdate.Add(p.opts.Validity*2/3).Sub(p.opts.Now()), 0)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-p.kick:
			timer.Stop()
			select {
			case <-time.After(p.opts.Debounce):
			case <-ctx.Done():
				return
			}
			// Revocations during the wait are in this build.
			select {
			case <-p.kick:
			default:
			}
		case <-timer.C:
		}
		c, err := p.Build(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.opts.Logger.Error("CRL build failed; keeping the previous one and retrying in 1s", "issuer", p.opts.Issuer.SKI, "err", err)
			select {
			case <-time.After(time.Second):
				p.Changed()
			case <-ctx.Done():
				return
			}
			continue
		}
		p.opts.Logger.Debug("CRL published", "issuer", p.opts.Issuer.SKI, "number", c.Number.String(), "entries", c.Entries)
	}
}
