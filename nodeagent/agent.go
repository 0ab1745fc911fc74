// Package nodeagent is the node agent's workload side: it attests callers
// of the SPIFFE Workload API from the kernel, asks the CA (over mTLS with
// the node's certificate) for an X.509-SVID per identity the definitions
// give them, keeps the SVIDs in memory, renews them at half their
// lifetime, and pushes them and the trust bundle to open streams. It signs
// nothing itself: the CA issues only what the definitions allow this node.
package nodeagent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/workloads"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CA is the CA's node agent endpoints, called with the node's
// certificate (agent.NodeClient).
type CA interface {
	WorkloadDefinitions(ctx context.Context) (*workloads.Set, error)
	WorkloadSign(ctx context.Context, spiffeID string, selectors []string, key crypto.Signer) (*agent.Credentials, error)
}

// Config configures an Agent.
type Config struct {
	// CA is the node's client of the CA. Required.
	CA CA
	// Roots returns the trust domain's current roots. Required.
	Roots func() []*x509.Certificate
	// TrustDomain of the CA. Required.
	TrustDomain spiffeid.TrustDomain
	// Federated, when set, returns the bundles of the federated trust
	// domains to hand to workloads (federation.go).
	Federated func() map[spiffeid.TrustDomain][]*x509.Certificate
	// KeyType of workload keys; empty means ec-p256.
	KeyType string
	// Poll is how often definitions and the bundle are checked; zero
	// means 2s (changes reach callers within that, plus a renewal).
	Poll time.Duration
	// JWT, when set, serves the Workload API's JWT methods (jwt.go);
	// without it they answer Unimplemented.
	JWT JWTCA
	// Kubelet, when set, adds the caller's pod's k8s selectors.
	Kubelet *Kubelet
	// Logger nil discards.
	Logger *slog.Logger
}

// Agent serves workload identities. Its methods are safe for concurrent
// use.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	hashes hashCache

	mu      sync.Mutex
	defs    []workloads.Definition
	defsSeq uint64
	loaded  bool
	svids   map[string]*entry // by SPIFFE ID
	bundle  [32]byte          // digest of the roots last seen
	fedSum  [32]byte          // digest of the federated bundles last seen
	changed chan struct{}     // closed and replaced at every change

	jwt     jwtState  // jwt.go
	encoded encodings // encode.go
	chains  chains    // compact.go
}

// entry is one SPIFFE ID's SVID.
type entry struct {
	id        string
	selectors []string // the caller's selectors it was signed for
	sign      sync.Mutex
	creds     *agent.Credentials // nil until signed
	got       time.Time          // when creds arrived
	lastUsed  time.Time
	retryAt   time.Time
}

// New returns an Agent; Run keeps it current.
func New(cfg Config) (*Agent, error) {
	if cfg.CA == nil || cfg.Roots == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("nodeagent: CA, Roots and TrustDomain are required")
	}
	if cfg.KeyType == "" {
		cfg.KeyType = "ec-p256"
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, svids: map[string]*entry{}, changed: make(chan struct{})}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.bundle = digest(cfg.Roots())
	a.fedSum = a.federatedDigest()
	return a, nil
}

func digest(roots []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, r := range roots {
		h.Write(r.Raw)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// changes returns a channel closed at the next change.
func (a *Agent) changes() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// notify wakes every stream; a.mu must be held.
func (a *Agent) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Refresh fetches the definitions now.
func (a *Agent) Refresh(ctx context.Context) error {
	set, err := a.cfg.CA.WorkloadDefinitions(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.loaded && set.Sequence == a.defsSeq {
		return nil
	}
	a.defs, a.defsSeq, a.loaded = set.Definitions, set.Sequence, true
	// An SVID no definition gives its selectors any more is dropped.
	for id, e := range a.svids {
		if !slices.ContainsFunc(workloads.Identities(a.defs, e.selectors), func(i workloads.Identity) bool { return i.SPIFFEID == id }) {
			delete(a.svids, id)
		}
	}
	a.log.Info("workload definitions", "sequence", set.Sequence, "count", len(set.Definitions))
	a.notifyLocked()
	return nil
}

// Run polls the definitions and the bundle, and renews SVIDs at half
// their lifetime, until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	tick := time.NewTicker(min(a.cfg.Poll, 500*time.Millisecond))
	defer tick.Stop()
	var lastPoll time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		if now.Sub(lastPoll) >= a.cfg.Poll {
			lastPoll = now
			if err := a.Refresh(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("fetching workload definitions failed", "err", err)
			}
			if err := a.RefreshJWTBundle(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("fetching the JWT-SVID keys failed", "err", err)
			}
			if d := digest(a.cfg.Roots()); d != a.bundle {
				a.mu.Lock()
				a.bundle = d
				a.notifyLocked()
				a.mu.Unlock()
				a.log.Info("trust bundle changed; pushing to streams")
			}
			if d := a.federatedDigest(); d != a.fedSum {
				a.mu.Lock()
				a.fedSum = d
				a.notifyLocked()
				a.mu.Unlock()
				a.log.Info("federated bundles changed; pushing to streams")
			}
		}
		a.rotate(ctx, now)
	}
}

// rotate renews the SVIDs past half their lifetime and drops the ones
// nobody asked for during a whole lifetime.
func (a *Agent) rotate(ctx context.Context, now time.Time) {
	a.mu.Lock()
	var due []*entry
	dropped := false
	for id, e := range a.svids {
		cr := e.creds
		if cr == nil || now.Before(e.retryAt) {
			continue
		}
		// The CA backdates NotBefore: the lifetime counts from arrival.
		life := cr.NotAfter.Sub(e.got)
		if now.Sub(e.lastUsed) > life || !now.Before(cr.NotAfter) {
			delete(a.svids, id)
			dropped = true
			continue
		}
		if !now.Before(e.got.Add(life / 2)) {
			due = append(due, e)
		}
	}
	if dropped {
		a.notifyLocked() // streams holding an expired SVID learn it
	}
	a.mu.Unlock()
	for _, e := range due {
		cr, err := a.signEntry(ctx, e)
		a.mu.Lock()
		switch {
		case err == nil:
			a.log.Info("workload SVID renewed", "spiffe_id", e.id, "serial", cr.Serial, "not_after", cr.NotAfter.Format(time.RFC3339))
			a.notifyLocked()
		case refused(err):
			a.log.Warn("the CA refused to renew a workload SVID; dropping it", "spiffe_id", e.id, "err", err)
			delete(a.svids, e.id)
			a.notifyLocked()
		default:
			a.log.Warn("renewing a workload SVID failed; retrying", "spiffe_id", e.id, "err", err)
			e.retryAt = time.Now().Add(time.Second)
		}
		a.mu.Unlock()
	}
}

// refused reports a CA answer that retrying will not change.
func refused(err error) bool {
	var ae *agent.APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusForbidden || ae.Status == http.StatusUnauthorized || ae.Status == http.StatusBadRequest)
}

// signEntry gets a new SVID for e with a fresh key.
func (a *Agent) signEntry(ctx context.Context, e *entry) (*agent.Credentials, error) {
	e.sign.Lock()
	defer e.sign.Unlock()
	return a.signLocked(ctx, e)
}

// signLocked is signEntry with e.sign held.
func (a *Agent) signLocked(ctx context.Context, e *entry) (*agent.Credentials, error) {
	key, err := agent.NewKey(a.cfg.KeyType)
	if err != nil {
		return nil, err
	}
	cr, err := a.cfg.CA.WorkloadSign(ctx, e.id, e.selectors, key)
	if err != nil {
		return nil, err
	}
	a.chains.compact(cr)
	a.mu.Lock()
	e.creds, e.got = cr, time.Now()
	a.mu.Unlock()
	return cr, nil
}

// ErrNotLoaded is returned before the definitions were fetched once.
var ErrNotLoaded = errors.New("nodeagent: workload definitions not fetched yet")

// SVIDs returns the caller's SVIDs: one per identity the definitions give
// its selectors, signing the ones not cached yet. None means the caller
// has no identity.
func (a *Agent) SVIDs(ctx context.Context, selectors []string) ([]*agent.Credentials, error) {
	a.mu.Lock()
	if !a.loaded {
		a.mu.Unlock()
		return nil, ErrNotLoaded
	}
	ids := workloads.Identities(a.defs, selectors)
	now := time.Now()
	entries := make([]*entry, 0, len(ids))
	for _, id := range ids {
		e := a.svids[id.SPIFFEID]
		if e == nil {
			e = &entry{id: id.SPIFFEID, selectors: slices.Clone(selectors)}
			a.svids[id.SPIFFEID] = e
		}
		e.lastUsed = now
		entries = append(entries, e)
	}
	a.mu.Unlock()
	var out []*agent.Credentials
	for _, e := range entries {
		a.mu.Lock()
		cr := e.creds
		a.mu.Unlock()
		if cr == nil || !now.Before(cr.NotAfter) {
			var err error
			if cr, err = a.signFirst(ctx, e); err != nil {
				if refused(err) {
					a.log.Warn("the CA refused a workload SVID", "spiffe_id", e.id, "err", err)
					a.drop(e)
					continue
				}
				return nil, err
			}
		}
		out = append(out, cr)
	}
	return out, nil
}

// signFirst signs e unless a concurrent caller did meanwhile.
func (a *Agent) signFirst(ctx context.Context, e *entry) (*agent.Credentials, error) {
	e.sign.Lock()
	defer e.sign.Unlock()
	a.mu.Lock()
	cr := e.creds
	a.mu.Unlock()
	if cr != nil && time.Now().Before(cr.NotAfter) {
		return cr, nil
	}
	cr, err := a.signLocked(ctx, e)
	if err == nil {
		a.log.Info("workload SVID issued", "spiffe_id", e.id, "serial", cr.Serial, "not_after", cr.NotAfter.Format(time.RFC3339))
	}
	return cr, err
}

func (a *Agent) drop(e *entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.svids[e.id] == e {
		delete(a.svids, e.id)
	}
}

// Bundle returns the current roots.
func (a *Agent) Bundle() []*x509.Certificate { return a.cfg.Roots() }
