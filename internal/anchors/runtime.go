package anchors

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// pollInterval is how often the stored anchor set is compared with the
// applied one, so changes made by another replica are followed.
const pollInterval = time.Second

// errNoChange makes an UpdateAnchors function store nothing.
var errNoChange = errors.New("no change")

// ServerProvisioner names the CA's own HTTPS certificates in the store:
// they are not counted as leaves an anchor must outlive.
const ServerProvisioner = "agentca-server"

// Store is what the runtime needs from the store: the anchor set, the
// issuers' leaf counts, and the revocations for their CRLs.
type Store interface {
	Anchors(ctx context.Context) (*store.AnchorSet, error)
	UpdateAnchors(ctx context.Context, fn func(*store.AnchorSet) error) (*store.AnchorSet, error)
	IssuerStats(ctx context.Context, issuerSKI string, now time.Time) (store.IssuerStats, error)
	crl.Source
}

// Options are what a Runtime is built from. Every field but OnActivate,
// ServerIssuer and Registry is required.
type Options struct {
	// Dir is the state directory: agentca.json is read again there for
	// the lifetimes that may have changed since the start (SIGHUP).
	Dir string
	// Config is agentca.json as the daemon started with it.
	Config    *config.Config
	Keys      Keys
	Store     Store
	Authority *ca.Authority
	// Responder is the OCSP responder every issuing CA and root signs
	// with, with the OCSP key; it reads CARecords.
	Responder *ocsp.Responder
	OCSPKey   crypto.Signer
	CARecords *CARecords
	Logger    *slog.Logger
	Registry  prometheus.Registerer
	// OnActivate runs after the active issuer changed (the server
	// certificate is renewed under it).
	OnActivate func(context.Context)
	// ServerIssuer is the SKI of the issuer of the CA's current HTTPS
	// certificate: retire refuses that issuer.
	ServerIssuer func() string
}

// Runtime runs the trust anchors of one daemon.
type Runtime struct {
	dir       string
	cfg       *config.Config
	keys      Keys
	st        Store
	authority *ca.Authority
	responder *ocsp.Responder
	ocspKey   crypto.Signer
	log       *slog.Logger
	// minStaged is the longest leaf lifetime at start-up: how long an
	// anchor must have been staged before activation is safe.
	// minStagedNow re-reads it from agentca.json (SIGHUP may have
	// changed the lifetimes).
	minStaged    time.Duration
	onActivate   func(context.Context)
	serverIssuer func() string
	// ctx bounds the per-issuer goroutines (cancel ends them); wg waits
	// for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	transitions *prometheus.CounterVec
	states      *prometheus.GaugeVec

	mu       sync.Mutex // serialises apply and the transitions
	applied  uint64
	activeID string
	// lastActiveSKI is the last active issuer that ran here: when a
	// later apply runs another one, onActivate follows (even when that
	// issuer could only start on a retry).
	lastActiveSKI string
	// activeErr is why the active anchor's issuing CA could not run at
	// the last apply, if it could not.
	activeErr error
	running   map[string]*runningIssuer // by anchor ID
	// caRecords are the issuing CAs as the OCSP responder reads them;
	// roots run the OCSP responder and CRL of each root in use, by SKI
	// (roots.go); rootsFailed is set while one could not start.
	caRecords    *CARecords
	roots        map[string]*runningRoot
	rootsFailed  bool
	rootsRetryAt time.Time
	trust        atomic.Pointer[api.Trust]
	crls         atomic.Pointer[map[string]*crl.Publisher] // by issuer SKI; "" is the active one
	// jwtSigners are the loaded JWT-SVID keys, by anchor ID; jwtErr is why
	// the active anchor's could not be loaded at the last apply (refresh
	// then applies again), jwtErrLogged the last such error logged
	// (jwt.go).
	jwtSigners   map[string]crypto.Signer
	jwtErr       error
	jwtErrLogged string
}

// runningIssuer is an active or retiring issuing CA with its CRL and OCSP
// responder.
type runningIssuer struct {
	issuer    *ca.Issuer
	publisher *crl.Publisher
	cancel    context.CancelFunc
	done      chan struct{}
}

// New runs the stored anchor set: it starts every active or retiring
// issuing CA (CRL, OCSP responder certificate) and every root in use,
// publishes the trust material, and gives the active anchor a JWT-SVID
// key when it has none. It refuses a set whose active issuing CA cannot
// run here. The goroutines it starts run until ctx is done or Close.
func New(ctx context.Context, opts Options) (*Runtime, error) {
	if opts.Config == nil || opts.Keys == nil || opts.Store == nil || opts.Authority == nil || opts.Responder == nil ||
		opts.OCSPKey == nil || opts.CARecords == nil || opts.Logger == nil {
		return nil, errors.New("anchors: Config, Keys, Store, Authority, Responder, OCSPKey, CARecords and Logger are required")
	}
	a := &Runtime{dir: opts.Dir, cfg: opts.Config, keys: opts.Keys, st: opts.Store, authority: opts.Authority,
		responder: opts.Responder, ocspKey: opts.OCSPKey, caRecords: opts.CARecords, log: opts.Logger,
		minStaged: MaxLeafTTL(opts.Config), onActivate: opts.OnActivate, serverIssuer: opts.ServerIssuer,
		running: map[string]*runningIssuer{}, roots: map[string]*runningRoot{}}
	a.ctx, a.cancel = context.WithCancel(ctx)
	a.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentca_anchor_transitions_total", Help: "Trust-anchor transitions made by this process, by the state entered.",
	}, []string{"state"})
	a.states = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentca_anchors", Help: "Trust anchors by state.",
	}, []string{"state"})
	if opts.Registry != nil {
		opts.Registry.MustRegister(a.transitions, a.states)
	}
	for _, st := range []string{"staged", "active", "retiring", "retired"} {
		a.transitions.WithLabelValues(st) // exposed at 0 before the first transition
	}
	empty := map[string]*crl.Publisher{}
	a.crls.Store(&empty)
	if err := a.start(ctx); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// start applies the stored set and settles the active anchor's JWT-SVID
// key.
func (a *Runtime) start(ctx context.Context) error {
	if err := a.Refresh(ctx); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	if a.authority.Issuer() == nil {
		if err := a.ActiveError(); err != nil {
			return err
		}
		return errors.New("no active trust anchor; refusing to start")
	}
	// A JWT-SVID key problem costs JWT-SVIDs (503), not the X.509 CA.
	if err := a.ensureJWTKey(ctx); err != nil {
		a.log.Error("the active anchor has no JWT-SVID key; JWT-SVIDs are refused until one is made at a later start", "err", err)
	} else if err := a.Refresh(ctx); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	return nil
}

// Close stops the per-issuer goroutines (CRLs, OCSP responder
// renewals) and waits for them.
func (a *Runtime) Close() {
	a.cancel()
	a.wg.Wait()
}

// minStagedNow is the longest leaf lifetime in the current agentca.json,
// or the one at start-up when the file cannot be read.
func (a *Runtime) minStagedNow() time.Duration {
	cfg, err := config.Load(filepath.Join(a.dir, config.FileName))
	if err != nil {
		return a.minStaged
	}
	return MaxLeafTTL(cfg)
}

// MaxLeafTTL is the longest lifetime any leaf can get under cfg.
func MaxLeafTTL(cfg *config.Config) time.Duration {
	m := cfg.Leaf.MaxTTL.Std()
	for _, p := range cfg.Provisioners {
		m = max(m, p.MaxTTL.Std())
	}
	return min(m, identity.Ceiling)
}

// Refresh applies the stored anchor set when it moved since the last
// apply.
func (a *Runtime) Refresh(ctx context.Context) error {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// The set was read before the lock: a transition may have applied a
	// newer one meanwhile, which must not be undone. The same set is
	// applied again only while its active issuer could not start (or its
	// JWT-SVID key could not be loaded).
	if set.Sequence < a.applied || set.Sequence == a.applied && a.activeErr == nil && a.jwtErr == nil {
		return nil
	}
	return a.apply(ctx, set)
}

// Watch follows changes made elsewhere (another replica, or an operator
// on another process) until ctx is done.
func (a *Runtime) Watch(ctx context.Context) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("reading the trust anchors failed", "err", err)
		}
		a.retryRoots(ctx)
	}
}

// parsed are an anchor's certificates.
type parsed struct{ root, issuer, cross *x509.Certificate }

func parseAnchor(an *store.Anchor) (*parsed, error) {
	var p parsed
	var err error
	if p.root, err = x509.ParseCertificate(an.Root); err != nil {
		return nil, fmt.Errorf("anchor %s: root: %w", an.ID, err)
	}
	if p.issuer, err = x509.ParseCertificate(an.Issuer); err != nil {
		return nil, fmt.Errorf("anchor %s: issuing CA: %w", an.ID, err)
	}
	if len(an.CrossSigned) > 0 {
		if p.cross, err = x509.ParseCertificate(an.CrossSigned); err != nil {
			return nil, fmt.Errorf("anchor %s: cross-signed certificate: %w", an.ID, err)
		}
	}
	return &p, nil
}

// apply makes set the running state. a.mu is held.
func (a *Runtime) apply(ctx context.Context, set *store.AnchorSet) error {
	var roots []*x509.Certificate
	var issuers []*ca.Issuer
	want := map[string]bool{}
	counts := map[store.AnchorState]int{}
	var active *ca.Issuer
	activeID := ""
	a.activeErr = nil
	for i := range set.Anchors {
		an := &set.Anchors[i]
		counts[an.State]++
		if an.State == store.AnchorRetired {
			continue
		}
		p, err := parseAnchor(an)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(roots, func(r *x509.Certificate) bool { return r.Equal(p.root) }) {
			roots = append(roots, p.root)
		}
		if an.State == store.AnchorStaged {
			continue
		}
		want[an.ID] = true
		if an.State == store.AnchorActive {
			activeID = an.ID
		}
		ri, err := a.startIssuer(ctx, an, p)
		if an.State == store.AnchorActive {
			a.activeErr = err
		}
		if err != nil {
			// Fail closed: without its key an issuer neither signs
			// leaves nor CRLs; the other anchors still run. At
			// start-up the active anchor's error stops the daemon
			// instead (ActiveError), so it is not logged twice.
			if a.applied == 0 && an.State == store.AnchorActive {
				continue
			}
			a.log.Error("cannot run the issuing CA of an anchor", "anchor", an.ID, "state", an.State, "err", err)
			continue
		}
		issuers = append(issuers, ri.issuer)
		if an.State == store.AnchorActive {
			active = ri.issuer
		}
	}
	if a.applied == 0 && a.activeErr != nil {
		// At start-up the daemon stops on this (ActiveError) with one
		// line: start nothing more (root responders, CRLs).
		return nil
	}
	for id, ri := range a.running {
		if !want[id] {
			a.stop(id, ri)
		}
	}
	if len(roots) == 0 {
		return errors.New("no trust anchor is published; refusing to run without one")
	}
	trust, err := api.NewTrust(a.cfg.TrustDomain, roots, set.Sequence, a.cfg.Leaf.DefaultTTL.Std()/2, issuers...)
	if err != nil {
		return err
	}
	if err := trust.SetJWTKeys(a.jwtKeys(set)); err != nil {
		// JWT-SVIDs are refused (503); the X.509 CA runs on.
		a.log.Error("cannot publish the JWT-SVID keys", "err", err)
	}
	// Retired (and staged) issuing CAs are still served by certificate
	// (caIssuers, CT extra_data): their leaves stay in the log.
	for i := range set.Anchors {
		if p, err := parseAnchor(&set.Anchors[i]); err == nil {
			trust.AddIssuingCert(p.issuer, p.root)
		}
	}
	a.activeID = activeID
	a.applyRoots(set)
	a.publishCRLs()
	a.authority.SetIssuer(active)
	a.trust.Store(trust)
	for _, st := range []store.AnchorState{store.AnchorStaged, store.AnchorActive, store.AnchorRetiring, store.AnchorRetired} {
		a.states.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
	if activeID == "" {
		a.log.Error("no usable active issuing CA: issuance is refused until one is")
	}
	if active != nil {
		if a.lastActiveSKI != "" && a.lastActiveSKI != active.SKI {
			a.log.Info("active issuing CA changed", "anchor", activeID, "issuer", active.SKI, "previous_issuer", a.lastActiveSKI)
			if a.onActivate != nil {
				a.onActivate(a.ctx)
			}
		}
		a.lastActiveSKI = active.SKI
	}
	a.applied = set.Sequence
	return nil
}

// startIssuer runs the issuing CA of an active or retiring anchor (once).
func (a *Runtime) startIssuer(_ context.Context, an *store.Anchor, p *parsed) (*runningIssuer, error) {
	if ri := a.running[an.ID]; ri != nil {
		return ri, nil
	}
	// Not the caller's context (an admin request, a watch event): an
	// issuer starting must not fail because its trigger went away.
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	key, err := a.keys.Load(roleIssuing, an.IssuerKey)
	if err != nil {
		return nil, err
	}
	iss, err := ca.NewIssuer(p.issuer, key, p.root)
	if err != nil {
		return nil, err
	}
	if p.cross != nil {
		if iss, err = iss.WithCross(p.cross); err != nil {
			return nil, err
		}
	}
	pub, err := crl.New(crl.Options{Issuer: iss, Source: a.st, Validity: a.cfg.CRL.Validity.Std(), Logger: a.log})
	if err != nil {
		return nil, err
	}
	if _, err := pub.Build(ctx); err != nil {
		return nil, err
	}
	rc := &responderCert{authority: a.authority, issuer: iss, responder: a.responder, key: a.ocspKey,
		ttl: a.cfg.OCSP.ResponderTTL.Std(), validity: a.cfg.OCSP.Validity.Std(), log: a.log.With("issuer", iss.SKI)}
	if err := rc.renew(ctx); err != nil {
		return nil, fmt.Errorf("OCSP responder certificate: %w", err)
	}
	runCtx, cancel := context.WithCancel(a.ctx)
	ri := &runningIssuer{issuer: iss, publisher: pub, cancel: cancel, done: make(chan struct{})}
	a.runLoops(ri.done,
		func() { pub.Run(runCtx) },
		func() { RenewLoop(runCtx, "OCSP responder certificate", rc.notAfter, rc.renew, rc.log) })
	a.running[an.ID] = ri
	a.log.Info("issuing CA running", "anchor", an.ID, "state", an.State, "issuer", iss.SKI, "root_sha256", fingerprint(p.root))
	return ri, nil
}

// stop ends a retired issuer's CRL and OCSP.
func (a *Runtime) stop(id string, ri *runningIssuer) {
	ri.cancel()
	<-ri.done
	a.responder.RemoveIssuer(ri.issuer.SKI)
	delete(a.running, id)
	a.log.Info("issuing CA stopped", "anchor", id, "issuer", ri.issuer.SKI)
}

// ActiveError is why the active anchor's issuing CA cannot run, or nil.
func (a *Runtime) ActiveError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.activeErr
}

// CRL implements api.CRLs: ski "" is the active issuer.
func (a *Runtime) CRL(ski string) *crl.CRL {
	if p := (*a.crls.Load())[ski]; p != nil {
		return p.Current()
	}
	return nil
}

// Revoked rebuilds the CRL of the certificate's issuer (a
// revocation.Cache).
func (a *Runtime) Revoked(_ context.Context, rec *store.Certificate) {
	if p := (*a.crls.Load())[rec.IssuerSKI]; p != nil {
		p.Changed()
	}
}

// RebuildCRLs rebuilds the CRL of every running issuer (not the roots':
// they list no revocation of the store).
func (a *Runtime) RebuildCRLs() {
	for ski, p := range *a.crls.Load() {
		if iss := p.Issuer(); ski != "" && iss.Cert != iss.Root {
			p.Changed()
		}
	}
}

// Trust returns the published trust material (an api.TrustSource).
func (a *Runtime) Trust() *api.Trust { return a.trust.Load() }

// Publishers are the CRL publishers of the running issuing CAs and roots,
// by SKI.
func (a *Runtime) Publishers() map[string]*crl.Publisher {
	out := map[string]*crl.Publisher{}
	for ski, p := range *a.crls.Load() {
		if ski != "" { // the active issuer, also listed under its SKI
			out[ski] = p
		}
	}
	return out
}

// transition changes the stored set with fn, applies the result and logs
// it as an audit line.
func (a *Runtime) transition(ctx context.Context, op, id string, fn func(*store.AnchorSet) error) (*store.AnchorSet, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// Every anchor whose state fn changes (an activation also moves the
	// active one to retiring), from the attempt that was stored.
	type change struct {
		id       string
		from, to store.AnchorState
	}
	var changes []change
	set, err := a.st.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		before := map[string]store.AnchorState{}
		for _, an := range set.Anchors {
			before[an.ID] = an.State
		}
		if err := fn(set); err != nil {
			return err
		}
		changes = changes[:0]
		for _, an := range set.Anchors {
			if from, ok := before[an.ID]; !ok || from != an.State {
				changes = append(changes, change{an.ID, from, an.State})
			}
		}
		return nil
	})
	if err != nil {
		a.log.Warn("anchor transition refused", "audit", "anchor", "op", op, "anchor", id, "err", err)
		return nil, err
	}
	for _, c := range changes {
		a.transitions.WithLabelValues(string(c.to)).Inc()
		an := set.Find(c.id)
		a.log.Info("anchor transition", "audit", "anchor", "op", op, "anchor", c.id, "from", c.from, "state", c.to,
			"issuer", an.IssuerSKI, "sequence", set.Sequence)
	}
	if err := a.apply(ctx, set); err != nil {
		return nil, &appliedError{fmt.Errorf("the anchors were changed (sequence %d) but applying them here failed: %w", set.Sequence, err)}
	}
	if a.activeErr != nil {
		return nil, &appliedError{fmt.Errorf("the anchors were changed (sequence %d) but this process cannot run the active issuing CA (it retries every second): %w", set.Sequence, a.activeErr)}
	}
	return set, nil
}

// appliedError is a transition that was stored but could not be applied
// here: the store holds the new state (other processes apply it), so what
// it created must not be undone.
type appliedError struct{ err error }

func (e *appliedError) Error() string { return e.err.Error() }
func (e *appliedError) Unwrap() error { return e.err }

// ListAnchors implements api.AnchorAdmin.
func (a *Runtime) ListAnchors(ctx context.Context) ([]wire.AnchorStatus, error) {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.AnchorStatus, 0, len(set.Anchors))
	for i := range set.Anchors {
		s, err := a.status(ctx, &set.Anchors[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *s)
	}
	return out, nil
}

// leafStats counts an issuer's unexpired certificates other than the
// CA's own (its server and OCSP responder certificates, which it
// replaces itself).
func (a *Runtime) leafStats(ctx context.Context, ski string) (int, time.Time, error) {
	st, err := a.st.IssuerStats(ctx, ski, time.Now())
	if err != nil {
		return 0, time.Time{}, err
	}
	n, last := 0, time.Time{}
	for prov, c := range st.ByProvisioner {
		if prov == ServerProvisioner || prov == ca.ResponderProvisioner {
			continue
		}
		n += c.Unexpired
		if c.LastNotAfter.After(last) {
			last = c.LastNotAfter
		}
	}
	return n, last, nil
}

func (a *Runtime) status(ctx context.Context, an *store.Anchor) (*wire.AnchorStatus, error) {
	p, err := parseAnchor(an)
	if err != nil {
		return nil, err
	}
	s := &wire.AnchorStatus{ID: an.ID, State: string(an.State), RootSHA256: fingerprint(p.root), IssuerSKI: an.IssuerSKI,
		NotAfter: p.root.NotAfter, IssuerNotAfter: p.issuer.NotAfter, CrossSigned: p.cross != nil,
		StagedAt: an.StagedAt, ActivatedAt: an.ActivatedAt, RetiringAt: an.RetiringAt, RetiredAt: an.RetiredAt}
	if an.State != store.AnchorRetired {
		if s.Unexpired, s.LastNotAfter, err = a.leafStats(ctx, an.IssuerSKI); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	switch an.State {
	case store.AnchorStaged:
		ready := an.StagedAt.Add(a.minStagedNow())
		s.SafeToActivate = !now.Before(ready)
		s.SafeToRetire = true
		if !s.SafeToActivate {
			s.Note = "activate after " + ready.UTC().Format(time.RFC3339) + " (one longest leaf lifetime after staging)"
		}
	case store.AnchorActive:
		s.Note = "issuing; stage and activate another anchor to rotate"
	case store.AnchorRetiring:
		s.SafeToRetire = s.Unexpired == 0
		if !s.SafeToRetire {
			s.Note = fmt.Sprintf("%d certificates still valid; retire after %s", s.Unexpired, s.LastNotAfter.UTC().Format(time.RFC3339))
		}
	}
	return s, nil
}

// StageAnchor implements api.AnchorAdmin: it creates keys and
// certificates for a new anchor and stores it as staged, which publishes
// its root at once.
func (a *Runtime) StageAnchor(ctx context.Context, req wire.StageRequest) (*wire.AnchorStatus, error) {
	if req.IntermediateOnly && req.CrossSign {
		return nil, fmt.Errorf("%w: --cross-sign applies to a new root; an intermediate-only anchor already chains to the current root", ca.ErrAnchorState)
	}
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return nil, err
	}
	cur := set.Active()
	if cur == nil {
		return nil, fmt.Errorf("%w: there is no active anchor to rotate from", ca.ErrAnchorState)
	}
	curP, err := parseAnchor(cur)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	org := "agentca"
	if o := curP.root.Subject.Organization; len(o) > 0 && o[0] != "" {
		org = o[0]
	}
	tag := now.UTC().Format("20060102T150405Z")
	kt := ca.KeyType(a.cfg.KeyType)
	if kt == "" {
		kt = ca.ECP256
	}
	newKeys := a.keys.New(kt)
	an, err := func() (*store.Anchor, error) {
		an := &store.Anchor{State: store.AnchorStaged, StagedAt: now}
		issKey, issRef, err := newKeys.Create(roleIssuing)
		if err != nil {
			return nil, err
		}
		var root *x509.Certificate
		var rootKey crypto.Signer
		if req.IntermediateOnly {
			root = curP.root
			an.RootKey = cur.RootKey
			if rootKey, err = a.keys.Load(roleRoot, cur.RootKey); err != nil {
				return nil, fmt.Errorf("the current root's key: %w", err)
			}
		} else {
			if rootKey, an.RootKey, err = newKeys.Create(roleRoot); err != nil {
				return nil, err
			}
			if root, err = ca.NewRoot(org, tag, rootKey, now); err != nil {
				return nil, err
			}
		}
		iss, err := ca.NewIssuingCA(org, tag, issKey, root, rootKey, now, a.cfg.PublicURLs.HTTP)
		if err != nil {
			return nil, err
		}
		if req.CrossSign {
			oldRootKey, err := a.keys.Load(roleRoot, cur.RootKey)
			if err != nil {
				return nil, fmt.Errorf("the current root's key: %w", err)
			}
			cross, err := ca.CrossSign(iss, curP.root, oldRootKey, now, a.cfg.PublicURLs.HTTP)
			if err != nil {
				return nil, err
			}
			an.CrossSigned = cross.Raw
		}
		an.ID, an.Root, an.Issuer, an.IssuerKey, an.IssuerSKI = ca.AnchorID(iss), root.Raw, iss.Raw, issRef, skiHex(iss)
		// Its JWT-SVID key, published from now on, signs from activation.
		jwtKey, jwtRef, err := newKeys.Create(roleJWT)
		if err != nil {
			return nil, err
		}
		if an.JWTPublicKey, err = x509.MarshalPKIXPublicKey(jwtKey.Public()); err != nil {
			return nil, err
		}
		an.JWTKey = jwtRef
		return an, nil
	}()
	if err != nil {
		return nil, errors.Join(err, newKeys.Cleanup())
	}
	set, err = a.transition(ctx, "stage", an.ID, func(set *store.AnchorSet) error {
		if set.Find(an.ID) != nil {
			return fmt.Errorf("%w: anchor %s exists", ca.ErrAnchorState, an.ID)
		}
		set.Anchors = append(set.Anchors, *an)
		return nil
	})
	if err != nil {
		// Only a definite refusal removes the new keys: after any other
		// failure (a timeout, an error applying a stored state) the
		// anchor may be stored, and its keys are what it needs.
		if errors.Is(err, ca.ErrAnchorState) {
			return nil, errors.Join(err, newKeys.Cleanup())
		}
		a.log.Warn("staging failed after the keys were made; they are kept in case the anchor was stored", "anchor", an.ID,
			"keys", strings.Join(newKeys.Refs(), ", "), "err", err)
		return nil, err
	}
	return a.status(ctx, set.Find(an.ID))
}

// ActivateAnchor implements api.AnchorAdmin.
func (a *Runtime) ActivateAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error) {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return nil, err
	}
	// The new issuer must be usable here before anything is stored.
	if an := set.Find(id); an != nil && an.State == store.AnchorStaged {
		if _, err := a.keys.Load(roleIssuing, an.IssuerKey); err != nil {
			return nil, fmt.Errorf("anchor %s: its issuing key cannot be loaded here, refusing to activate it: %w", id, err)
		}
	}
	minStaged := a.minStagedNow()
	set, err = a.transition(ctx, "activate", id, func(set *store.AnchorSet) error {
		return ca.ActivateAnchor(set, id, time.Now(), minStaged, force)
	})
	if err != nil {
		return nil, err
	}
	if an := set.Find(id); force && an.ActivatedAt.Sub(an.StagedAt) < minStaged {
		a.log.Warn("anchor activated by force less than one longest leaf lifetime after staging: agents that have not renewed since may fail to verify the CA and its new leaves",
			"audit", "anchor", "anchor", id, "staged_for", an.ActivatedAt.Sub(an.StagedAt).Round(time.Second).String(), "leaf_lifetime", minStaged.String())
	}
	return a.status(ctx, set.Find(id))
}

// RetireAnchor implements api.AnchorAdmin.
func (a *Runtime) RetireAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error) {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return nil, err
	}
	an := set.Find(id)
	if an == nil {
		return nil, fmt.Errorf("%w: %q", ca.ErrAnchorNotFound, id)
	}
	n, last, err := a.leafStats(ctx, an.IssuerSKI)
	if err != nil {
		return nil, err
	}
	if a.serverIssuer != nil && a.serverIssuer() == an.IssuerSKI && !force {
		return nil, fmt.Errorf("%w: this CA's own HTTPS certificate is still issued by anchor %s (its renewal under the active anchor is being retried); agents that drop the root would not reach the CA", ca.ErrAnchorUnsafe, id)
	}
	jwtMax := a.jwtMaxTTLNow()
	set, err = a.transition(ctx, "retire", id, func(set *store.AnchorSet) error {
		now := time.Now()
		if err := checkJWTRetire(set, id, now, jwtMax, force); err != nil {
			return err
		}
		return ca.RetireAnchor(set, id, now, n, last, force)
	})
	if err != nil {
		return nil, err
	}
	if force && n > 0 {
		a.log.Warn("anchor retired by force with unexpired certificates: their holders fail chain and revocation checks now",
			"audit", "anchor", "anchor", id, "unexpired", n)
	}
	return a.status(ctx, set.Find(id))
}

func skiHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SubjectKeyId) }

// fingerprint is the SHA-256 of c, in hex.
func fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}
