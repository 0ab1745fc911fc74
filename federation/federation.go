package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Store keeps the last good bundle of each foreign trust domain; both
// store backends implement it.
type Store interface {
	FederatedBundles(ctx context.Context) (*store.FederationSet, error)
	PutFederatedBundle(ctx context.Context, b store.FederatedBundle) (store.FederatedBundle, error)
}

// fetchTimeout bounds one fetch.
const fetchTimeout = 10 * time.Second

// Options configure a Federation.
type Options struct {
	// Dir is the state directory: relative file names are in it.
	Dir string
	// Domains are agentca.json's federation entries (validated).
	Domains []config.Federation
	Store   Store
	// Registry receives the agentca_federation_* metrics; nil: none.
	Registry prometheus.Registerer
	// Logger nil discards.
	Logger *slog.Logger
}

// Federation holds the foreign trust domains' bundles and keeps them
// fresh. Its methods are safe for concurrent use.
type Federation struct {
	st      Store
	log     *slog.Logger
	m       *metrics
	domains []*domain
	byName  map[spiffeid.TrustDomain]*domain
}

// domain is one foreign trust domain.
type domain struct {
	cfg        config.Federation
	td         spiffeid.TrustDomain
	endpointID spiffeid.ID    // https_spiffe
	webRoots   *x509.CertPool // https_web; nil: the system's
	lo, hi     time.Duration
	cur        atomic.Pointer[held]
}

// held is a domain's last good bundle.
type held struct {
	b         *spiffebundle.Bundle
	fetchedAt time.Time
	source    string
}

// Bundle sources, as recorded in the store.
const (
	sourceBootstrap = "bootstrap"
	sourceEndpoint  = "endpoint"
)

// New reads the bootstrap bundles and the stored ones: a trust domain
// starts from the later of the two. A bootstrap file that cannot be read
// is an error (the CA refuses to start). New does not fetch; Run does.
func New(ctx context.Context, o Options) (*Federation, error) {
	f := &Federation{st: o.Store, log: o.Logger, byName: map[spiffeid.TrustDomain]*domain{}}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	stored, err := o.Store.FederatedBundles(ctx)
	if err != nil {
		return nil, fmt.Errorf("federation: reading the stored bundles: %w", err)
	}
	for _, c := range o.Domains {
		d, err := newDomain(o.Dir, c)
		if err != nil {
			return nil, err
		}
		if rec, ok := stored.Bundles[c.TrustDomain]; ok {
			if b, err := ParseBundle(d.td, rec.Bundle); err != nil {
				f.log.Warn("ignoring the stored bundle of a federated trust domain", "trust_domain", c.TrustDomain, "err", err)
			} else {
				d.cur.Store(&held{b: b, fetchedAt: rec.FetchedAt, source: rec.Source})
			}
		}
		if d.cur.Load() == nil {
			if err := f.bootstrap(ctx, o.Dir, d); err != nil {
				return nil, err
			}
		}
		f.domains = append(f.domains, d)
		f.byName[d.td] = d
	}
	f.m = newMetrics(o.Registry, f)
	return f, nil
}

func newDomain(dir string, c config.Federation) (*domain, error) {
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	d := &domain{cfg: c, td: td}
	d.lo, d.hi = c.RefreshBounds()
	switch c.Profile {
	case config.ProfileHTTPSSPIFFE:
		if d.endpointID, err = spiffeid.FromString(c.EndpointSPIFFEID); err != nil {
			return nil, fmt.Errorf("federation: %s: endpoint_spiffe_id: %w", td, err)
		}
	case config.ProfileHTTPSWeb:
		if c.WebRootsFile != "" {
			pem, err := os.ReadFile(inDir(dir, c.WebRootsFile))
			if err != nil {
				return nil, fmt.Errorf("federation: %s: web_roots_file: %w", td, err)
			}
			d.webRoots = x509.NewCertPool()
			if !d.webRoots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("federation: %s: web_roots_file %s holds no PEM certificate", td, c.WebRootsFile)
			}
		}
	default:
		return nil, fmt.Errorf("federation: %s: unknown profile %q", td, c.Profile)
	}
	return d, nil
}

// bootstrap loads d's bootstrap bundle and stores it (unless another
// replica stored a later one meanwhile, which it then uses).
func (f *Federation) bootstrap(ctx context.Context, dir string, d *domain) error {
	if d.cfg.BootstrapBundle == "" {
		return nil // https_web: nothing until the first fetch
	}
	path := inDir(dir, d.cfg.BootstrapBundle)
	data, err := readLimited(path)
	if err != nil {
		return fmt.Errorf("federation: %s: bootstrap_bundle: %w", d.td, err)
	}
	b, err := ParseBundle(d.td, data)
	if err != nil {
		return fmt.Errorf("federation: bootstrap_bundle %s: %w", d.cfg.BootstrapBundle, err)
	}
	return f.keep(ctx, d, &held{b: b, fetchedAt: time.Now(), source: sourceBootstrap})
}

// keep stores h as d's bundle, or adopts the later one the store holds.
func (f *Federation) keep(ctx context.Context, d *domain, h *held) error {
	raw, err := h.b.Marshal()
	if err != nil {
		return fmt.Errorf("federation: %s: %w", d.td, err)
	}
	rec, err := f.st.PutFederatedBundle(ctx, store.FederatedBundle{TrustDomain: d.td.Name(), Bundle: raw, FetchedAt: h.fetchedAt, Source: h.source})
	if err != nil {
		return fmt.Errorf("federation: %s: storing the bundle: %w", d.td, err)
	}
	if !rec.FetchedAt.Equal(h.fetchedAt) {
		b, err := ParseBundle(d.td, rec.Bundle)
		if err != nil {
			return err
		}
		h = &held{b: b, fetchedAt: rec.FetchedAt, source: rec.Source}
	}
	d.cur.Store(h)
	return nil
}

// adoptStored takes the store's bundle of d when it is later than the one
// held (another replica fetched it).
func (f *Federation) adoptStored(ctx context.Context, d *domain) {
	set, err := f.st.FederatedBundles(ctx)
	if err != nil {
		return
	}
	rec, ok := set.Bundles[d.td.Name()]
	if cur := d.cur.Load(); !ok || (cur != nil && !rec.FetchedAt.After(cur.fetchedAt)) {
		return
	}
	if b, err := ParseBundle(d.td, rec.Bundle); err == nil {
		d.cur.Store(&held{b: b, fetchedAt: rec.FetchedAt, source: rec.Source})
	}
}

func inDir(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func readLimited(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxBundleSize {
		return nil, fmt.Errorf("%s is over %d bytes", path, MaxBundleSize)
	}
	return os.ReadFile(path)
}

// TrustDomains are the federated trust domains, in configuration order.
func (f *Federation) TrustDomains() []spiffeid.TrustDomain {
	out := make([]spiffeid.TrustDomain, 0, len(f.domains))
	for _, d := range f.domains {
		out = append(out, d.td)
	}
	return out
}

// ErrUnknownTrustDomain: the trust domain is not federated, or has no
// bundle yet (an https_web domain before its first good fetch).
var ErrUnknownTrustDomain = errors.New("federation: no bundle for that trust domain")

// GetBundleForTrustDomain implements spiffebundle.Source: the last good
// bundle of a federated trust domain.
func (f *Federation) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	d, ok := f.byName[td]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTrustDomain, td)
	}
	h := d.cur.Load()
	if h == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTrustDomain, td)
	}
	return h.b, nil
}

// Run fetches every trust domain's bundle now and again per its refresh
// hint until ctx is done.
func (f *Federation) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, d := range f.domains {
		wg.Go(func() { f.follow(ctx, d) })
	}
	wg.Wait()
}

// follow keeps d's bundle fresh: after a good fetch, the next one comes
// after the bundle's refresh hint (within [lo, hi]); after a failure,
// after lo. A bundle older than one refresh interval is logged at WARN
// at every failed fetch.
func (f *Federation) follow(ctx context.Context, d *domain) {
	interval := d.interval(nil)
	lastGood := time.Now()
	for {
		err := f.fetch(ctx, d)
		if ctx.Err() != nil {
			return
		}
		wait := d.lo
		if err == nil {
			lastGood = time.Now()
			interval = d.interval(d.cur.Load().b)
			wait = interval
			f.m.stale.WithLabelValues(d.td.Name()).Set(0)
		} else {
			f.adoptStored(ctx, d)
			stale := time.Since(lastGood) >= interval
			if stale {
				f.m.stale.WithLabelValues(d.td.Name()).Set(1)
				f.log.Warn("cannot fetch the bundle of a federated trust domain; keeping the last good one",
					"trust_domain", d.td.Name(), "endpoint", d.cfg.BundleEndpointURL, "err", err,
					"last_good", d.fetchedAt().Format(time.RFC3339), "since_last_fetch", time.Since(lastGood).Round(time.Second).String())
			} else {
				f.log.Info("fetching the bundle of a federated trust domain failed; retrying", "trust_domain", d.td.Name(), "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// interval is the time between fetches of d: b's refresh hint (the
// default without one), within [lo, hi].
func (d *domain) interval(b *spiffebundle.Bundle) time.Duration {
	hint := config.DefaultFederationRefresh
	if b != nil {
		if h, ok := b.RefreshHint(); ok && h > 0 {
			hint = h
		}
	}
	return min(max(hint, d.lo), d.hi)
}

func (d *domain) fetchedAt() time.Time {
	if h := d.cur.Load(); h != nil {
		return h.fetchedAt
	}
	return time.Time{}
}

// fetch fetches d's bundle once and keeps it if it is good.
func (f *Federation) fetch(ctx context.Context, d *domain) (err error) {
	defer func() { f.m.observe(d.td.Name(), err) }()
	var opt federation.FetchOption
	if d.cfg.Profile == config.ProfileHTTPSSPIFFE {
		// Authenticated with the last good bundle of that trust domain.
		h := d.cur.Load()
		if h == nil {
			return errors.New("federation: no bundle to authenticate the endpoint with")
		}
		opt = federation.WithSPIFFEAuth(h.b, d.endpointID)
	} else {
		opt = federation.WithWebPKIRoots(d.webRoots)
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	b, err := federation.FetchBundle(fctx, d.td, d.cfg.BundleEndpointURL, opt)
	if err != nil {
		return err
	}
	if err := checkBundle(b); err != nil {
		return err
	}
	if h := d.cur.Load(); h != nil && h.b.Equal(b) {
		h2 := *h
		h2.fetchedAt, h2.source = time.Now(), sourceEndpoint
		return f.keep(ctx, d, &h2)
	}
	if err := f.keep(ctx, d, &held{b: b, fetchedAt: time.Now(), source: sourceEndpoint}); err != nil {
		return err
	}
	seq, _ := b.SequenceNumber()
	f.log.Info("federated trust domain bundle updated", "trust_domain", d.td.Name(), "x509_authorities", len(b.X509Authorities()),
		"jwt_authorities", len(b.JWTAuthorities()), "sequence", seq)
	return nil
}

// Bundles returns the last good bundle of every federated trust domain
// that has one, in configuration order.
func (f *Federation) Bundles() []*spiffebundle.Bundle {
	var out []*spiffebundle.Bundle
	for _, d := range f.domains {
		if h := d.cur.Load(); h != nil {
			out = append(out, h.b)
		}
	}
	return slices.Clip(out)
}
