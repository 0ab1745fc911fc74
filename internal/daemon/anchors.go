package daemon

// Trust anchors at run time. The anchor set lives in the store (see
// store.AnchorSet); this file turns it into the running CA: the active
// issuing CA signs leaves, every active or retiring issuing CA keeps a
// CRL publisher and a delegated OCSP responder, and every staged, active
// or retiring root is published in /v1/roots and the bundle. apply runs
// at start-up, after each transition made here, and whenever the stored
// sequence moves (another replica changed the set), so every process
// converges on the stored state.

import (
	"context"
	"crypto"
	"crypto/x509"
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

// anchorsPollInterval is how often the stored anchor set is compared with
// the applied one, so changes made by another replica are followed.
const anchorsPollInterval = time.Second

// errNoChange makes an UpdateAnchors function store nothing.
var errNoChange = errors.New("no change")

// anchorStore is the anchor runtime's role in the store: the anchor set,
// what each issuing CA still vouches for, and the revocations its CRLs
// publish.
type anchorStore interface {
	Anchors(ctx context.Context) (*store.AnchorSet, error)
	UpdateAnchors(ctx context.Context, fn func(*store.AnchorSet) error) (*store.AnchorSet, error)
	IssuerStats(ctx context.Context, issuerSKI string, now time.Time) (store.IssuerStats, error)
	crl.Source
}

// anchors runs the trust anchors of one daemon.
type anchors struct {
	dir       string
	cfg       *config.Config
	keys      *caKeys
	st        anchorStore
	authority *ca.Authority
	responder *ocsp.Responder
	ocspKey   crypto.Signer
	log       *slog.Logger
	// minStaged is the longest leaf lifetime at start-up: how long an
	// anchor must have been staged before activation is safe.
	// minStagedNow re-reads it from agentca.json (SIGHUP may have
	// changed the lifetimes).
	minStaged time.Duration
	// onActivate runs after the active issuer changed (the server
	// certificate is renewed under it).
	onActivate func(context.Context)
	// serverIssuer is the SKI of the issuer of the CA's current HTTPS
	// certificate: retire refuses that issuer.
	serverIssuer func() string
	// setTrust publishes new trust material (api.Server.SetTrust).
	setTrust func(*api.Trust)
	// ctx bounds the per-issuer goroutines; wg waits for them.
	ctx context.Context
	wg  sync.WaitGroup

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
	// (rootstatus.go); rootsFailed is set while one could not start.
	caRecords    *caRecords
	roots        map[string]*runningRoot
	rootsFailed  bool
	rootsRetryAt time.Time
	trust        atomic.Pointer[api.Trust]
	crls         atomic.Pointer[map[string]*crl.Publisher] // by issuer SKI; "" is the active one
	// jwtSigners are the loaded JWT-SVID keys, by anchor ID; jwtErr is why
	// the active anchor's could not be loaded at the last apply (refresh
	// then applies again), jwtErrLogged the last such error logged
	// (jwtsvid.go).
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

func newAnchors(ctx context.Context, a *anchors, reg prometheus.Registerer) *anchors {
	a.ctx = ctx
	a.running = map[string]*runningIssuer{}
	a.roots = map[string]*runningRoot{}
	a.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "agentca_anchor_transitions_total", Help: "Trust-anchor transitions made by this process, by the state entered.",
	}, []string{"state"})
	a.states = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "agentca_anchors", Help: "Trust anchors by state.",
	}, []string{"state"})
	if reg != nil {
		reg.MustRegister(a.transitions, a.states)
	}
	for _, st := range []string{"staged", "active", "retiring", "retired"} {
		a.transitions.WithLabelValues(st) // exposed at 0 before the first transition
	}
	empty := map[string]*crl.Publisher{}
	a.crls.Store(&empty)
	return a
}

// minStagedNow is the longest leaf lifetime in the current agentca.json,
// or the one at start-up when the file cannot be read.
func (a *anchors) minStagedNow() time.Duration {
	cfg, err := config.Load(filepath.Join(a.dir, config.FileName))
	if err != nil {
		return a.minStaged
	}
	return maxLeafTTL(cfg)
}

// maxLeafTTL is the longest lifetime any leaf can get under cfg.
func maxLeafTTL(cfg *config.Config) time.Duration {
	m := cfg.Leaf.MaxTTL.Std()
	for _, p := range cfg.Provisioners {
		m = max(m, p.MaxTTL.Std())
	}
	return min(m, identity.Ceiling)
}

// bootstrap stores the anchor of a state directory made before anchors
// were stored (certs/root.pem and certs/issuing.pem with the configured
// keys), as active, when the store holds none.
func (a *anchors) bootstrap(ctx context.Context) error {
	root, err := readCert(filepath.Join(a.dir, RootCertFile))
	if err != nil {
		return err
	}
	iss, err := readCert(filepath.Join(a.dir, IssuingCert))
	if err != nil {
		return err
	}
	_, err = a.st.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		if len(set.Anchors) > 0 {
			return errNoChange
		}
		at := iss.NotBefore
		set.Anchors = append(set.Anchors, store.Anchor{
			ID: ca.AnchorID(iss), State: store.AnchorActive, Root: root.Raw, Issuer: iss.Raw,
			RootKey: a.keys.ref(roleRoot), IssuerKey: a.keys.ref(roleIssuing), IssuerSKI: skiHex(iss),
			StagedAt: at, ActivatedAt: at,
		})
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}

// refresh applies the stored anchor set when it moved since the last
// apply.
func (a *anchors) refresh(ctx context.Context) error {
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

// watch follows changes made elsewhere (another replica, or an operator
// on another process) until ctx is done.
func (a *anchors) watch(ctx context.Context) {
	t := time.NewTicker(anchorsPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.refresh(ctx); err != nil && ctx.Err() == nil {
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
func (a *anchors) apply(ctx context.Context, set *store.AnchorSet) error {
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
		ri, err := a.start(ctx, an, p)
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
	if a.setTrust != nil {
		a.setTrust(trust)
	}
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

// start runs the issuing CA of an active or retiring anchor (once).
func (a *anchors) start(_ context.Context, an *store.Anchor, p *parsed) (*runningIssuer, error) {
	if ri := a.running[an.ID]; ri != nil {
		return ri, nil
	}
	// Not the caller's context (an admin request, a watch event): an
	// issuer starting must not fail because its trigger went away.
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	key, err := a.keys.load("issuing", an.IssuerKey, false)
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
	rc := &responderCerts{authority: a.authority, issuer: iss, responder: a.responder, key: a.ocspKey,
		ttl: a.cfg.OCSP.ResponderTTL.Std(), validity: a.cfg.OCSP.Validity.Std(), log: a.log.With("issuer", iss.SKI)}
	if err := rc.renew(ctx); err != nil {
		return nil, fmt.Errorf("OCSP responder certificate: %w", err)
	}
	runCtx, cancel := context.WithCancel(a.ctx)
	ri := &runningIssuer{issuer: iss, publisher: pub, cancel: cancel, done: make(chan struct{})}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(ri.done)
		var wg sync.WaitGroup
		wg.Go(func() { pub.Run(runCtx) })
		wg.Go(func() { renewLoop(runCtx, "OCSP responder certificate", rc.notAfter, rc.renew, rc.log) })
		wg.Wait()
	}()
	a.running[an.ID] = ri
	a.log.Info("issuing CA running", "anchor", an.ID, "state", an.State, "issuer", iss.SKI, "root_sha256", Fingerprint(p.root))
	return ri, nil
}

// stop ends a retired issuer's CRL and OCSP.
func (a *anchors) stop(id string, ri *runningIssuer) {
	ri.cancel()
	<-ri.done
	a.responder.RemoveIssuer(ri.issuer.SKI)
	delete(a.running, id)
	a.log.Info("issuing CA stopped", "anchor", id, "issuer", ri.issuer.SKI)
}

// ActiveError is why the active anchor's issuing CA cannot run, or nil.
func (a *anchors) ActiveError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.activeErr
}

// setTrustFunc sets where new trust material is published.
func (a *anchors) setTrustFunc(f func(*api.Trust)) {
	a.mu.Lock()
	a.setTrust = f
	a.mu.Unlock()
}

// Wait waits for the per-issuer goroutines after ctx is done.
func (a *anchors) Wait() { a.wg.Wait() }

// CRL implements api.CRLs: ski "" is the active issuer.
func (a *anchors) CRL(ski string) *crl.CRL {
	if p := (*a.crls.Load())[ski]; p != nil {
		return p.Current()
	}
	return nil
}

// revoked rebuilds the CRL of the certificate's issuer.
func (a *anchors) revoked(rec *store.Certificate) {
	if p := (*a.crls.Load())[rec.IssuerSKI]; p != nil {
		p.Changed()
	}
}

// rebuildCRLs rebuilds the CRL of every running issuer (not the roots':
// they list no revocation of the store).
func (a *anchors) rebuildCRLs() {
	for ski, p := range *a.crls.Load() {
		if iss := p.Issuer(); ski != "" && iss.Cert != iss.Root {
			p.Changed()
		}
	}
}

// Trust returns the published trust material.
func (a *anchors) Trust() *api.Trust { return a.trust.Load() }

// transition changes the stored set with fn, applies the result and logs
// it as an audit line.
func (a *anchors) transition(ctx context.Context, op, id string, fn func(*store.AnchorSet) error) (*store.AnchorSet, error) {
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
func (a *anchors) ListAnchors(ctx context.Context) ([]wire.AnchorStatus, error) {
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
func (a *anchors) leafStats(ctx context.Context, ski string) (int, time.Time, error) {
	st, err := a.st.IssuerStats(ctx, ski, time.Now())
	if err != nil {
		return 0, time.Time{}, err
	}
	n, last := 0, time.Time{}
	for prov, c := range st.ByProvisioner {
		if prov == serverProvisioner || prov == ca.ResponderProvisioner {
			continue
		}
		n += c.Unexpired
		if c.LastNotAfter.After(last) {
			last = c.LastNotAfter
		}
	}
	return n, last, nil
}

func (a *anchors) status(ctx context.Context, an *store.Anchor) (*wire.AnchorStatus, error) {
	p, err := parseAnchor(an)
	if err != nil {
		return nil, err
	}
	s := &wire.AnchorStatus{ID: an.ID, State: string(an.State), RootSHA256: Fingerprint(p.root), IssuerSKI: an.IssuerSKI,
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
func (a *anchors) StageAnchor(ctx context.Context, req wire.StageRequest) (*wire.AnchorStatus, error) {
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
	newKeys := &newAnchorKeys{a: a, kt: kt}
	an, err := func() (*store.Anchor, error) {
		an := &store.Anchor{State: store.AnchorStaged, StagedAt: now}
		issKey, issRef, err := newKeys.create(roleIssuing)
		if err != nil {
			return nil, err
		}
		var root *x509.Certificate
		var rootKey crypto.Signer
		if req.IntermediateOnly {
			root = curP.root
			an.RootKey = cur.RootKey
			if rootKey, err = a.keys.load(roleRoot, cur.RootKey, false); err != nil {
				return nil, fmt.Errorf("the current root's key: %w", err)
			}
		} else {
			if rootKey, an.RootKey, err = newKeys.create(roleRoot); err != nil {
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
			oldRootKey, err := a.keys.load(roleRoot, cur.RootKey, false)
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
		jwtKey, jwtRef, err := newKeys.create(roleJWT)
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
		return nil, errors.Join(err, newKeys.cleanup())
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
			return nil, errors.Join(err, newKeys.cleanup())
		}
		a.log.Warn("staging failed after the keys were made; they are kept in case the anchor was stored", "anchor", an.ID,
			"keys", strings.Join(newKeys.refs, ", "), "err", err)
		return nil, err
	}
	return a.status(ctx, set.Find(an.ID))
}

// ActivateAnchor implements api.AnchorAdmin.
func (a *anchors) ActivateAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error) {
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return nil, err
	}
	// The new issuer must be usable here before anything is stored.
	if an := set.Find(id); an != nil && an.State == store.AnchorStaged {
		if _, err := a.keys.load(roleIssuing, an.IssuerKey, false); err != nil {
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
func (a *anchors) RetireAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error) {
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
