package anchors

// The status of issuing CAs, answered for by their roots (docs/revocation.md,
// "Issuing CA status"). Every root of a staged, active or retiring anchor
// runs a delegated OCSP responder (a certificate the root issues for the
// CA's OCSP key, renewed at two thirds of ocsp.responder_ttl) whose
// responses are signed ahead of requests, and a CRL (rebuilt at two thirds
// of rootCRLValidity). The root's key is read only
// for those two signatures, in the background: the online OCSP key signs
// the responses, so a root in an HSM (or a key file) is never asked per
// request. The status source is the anchor set: the issuing CA
// certificates (and cross-signed ones) of non-retired anchors are good;
// nothing revokes an issuing CA, so the CRLs are empty; a retired
// anchor's issuing CA is unknown (retiring is not revoking: its leaves
// have expired, and the CA no longer vouches for it).

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
)

// rootCRLValidity is nextUpdate - thisUpdate of a root's CRL. It lists
// revoked issuing CAs, which nothing revokes today, so it is long: the
// root's key signs one about every 16 hours.
const rootCRLValidity = 24 * time.Hour

// anchorProvisioner names the issuing CA certificates in the records the
// OCSP responder reads (they are not in the store).
const anchorProvisioner = "agentca-anchor"

// CARecords are the issuing CA certificates as the records the OCSP
// responder reads, keyed by serial; it answers from them before the store.
type CARecords struct {
	ocsp.Store
	certs atomic.Pointer[map[string]*store.Certificate]
}

// NewCARecords answers from the issuing CAs the Runtime sets, then from
// st.
func NewCARecords(st ocsp.Store) *CARecords { return &CARecords{Store: st} }

// Certificate implements ocsp.Store.
func (c *CARecords) Certificate(ctx context.Context, serial string) (*store.Certificate, error) {
	if m := c.certs.Load(); m != nil {
		if rec := (*m)[serial]; rec != nil {
			return rec, nil
		}
	}
	return c.Store.Certificate(ctx, serial)
}

// set replaces the records with the issuing CA certificates (and
// cross-signed ones) of the non-retired anchors of set.
func (c *CARecords) set(set *store.AnchorSet) {
	m := map[string]*store.Certificate{}
	for _, l := range liveAnchors(set) {
		for _, cert := range []*x509.Certificate{l.p.issuer, l.p.cross} {
			if cert == nil || len(cert.AuthorityKeyId) == 0 {
				continue
			}
			sn := hex.EncodeToString(cert.SerialNumber.Bytes())
			m[sn] = &store.Certificate{Serial: sn, Provisioner: anchorProvisioner, IssuerSKI: hex.EncodeToString(cert.AuthorityKeyId),
				NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, DER: cert.Raw}
		}
	}
	c.certs.Store(&m)
}

// liveAnchor is a non-retired anchor of a set and its certificates.
type liveAnchor struct {
	an *store.Anchor
	p  *parsed
}

// liveAnchors are the non-retired anchors of set whose certificates parse,
// in the set's order.
func liveAnchors(set *store.AnchorSet) []liveAnchor {
	var live []liveAnchor
	for i := range set.Anchors {
		an := &set.Anchors[i]
		if an.State == store.AnchorRetired {
			continue
		}
		p, err := parseAnchor(an)
		if err != nil {
			continue
		}
		live = append(live, liveAnchor{an: an, p: p})
	}
	return live
}

// runningRoot is the OCSP responder and CRL of one root.
type runningRoot struct {
	root      *x509.Certificate
	publisher *crl.Publisher
	cancel    context.CancelFunc
	done      chan struct{}
}

// noRevocations is a root's revocation source: no issuing CA is revoked.
type noRevocations struct{}

func (noRevocations) Revocations(context.Context, string, time.Time) ([]store.Revocation, error) {
	return nil, nil
}

// rootKey is a root's key, read from its file or KMS at each signature
// and let go after.
type rootKey struct {
	keys Keys
	ref  string
	pub  crypto.PublicKey
}

func (k *rootKey) Public() crypto.PublicKey { return k.pub }

func (k *rootKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s, err := k.keys.Load(roleRoot, k.ref)
	if err != nil {
		return nil, fmt.Errorf("the root key: %w", err)
	}
	return s.Sign(r, digest, opts)
}

// applyRoots runs the responder and CRL of every root of a non-retired
// anchor of set and stops the others. a.mu is held. A root that cannot
// start (its key cannot be read) is logged and retried by retryRoots
// a minute later.
func (a *Runtime) applyRoots(set *store.AnchorSet) {
	a.caRecords.set(set)
	want := map[string]*store.Anchor{}
	for _, l := range liveAnchors(set) {
		if ski := skiHex(l.p.root); want[ski] == nil {
			want[ski] = l.an
		}
	}
	a.rootsFailed = false
	a.rootsRetryAt = time.Now().Add(time.Minute)
	for ski, an := range want {
		if a.roots[ski] != nil {
			continue
		}
		if err := a.startRoot(ski, an); err != nil {
			a.rootsFailed = true
			a.log.Error("cannot run the OCSP responder and CRL of a root (whole-chain OCSP and CRL checks of its issuing CAs fail until it can); retrying",
				"root", ski, "err", err)
		}
	}
	for ski, rr := range a.roots {
		if want[ski] == nil {
			rr.cancel()
			<-rr.done
			a.responder.RemoveIssuer(ski)
			delete(a.roots, ski)
			a.log.Info("root OCSP responder and CRL stopped", "root", ski)
		}
	}
}

// retryRoots applies the stored set again, a minute after a root could
// not start.
func (a *Runtime) retryRoots(ctx context.Context) {
	a.mu.Lock()
	failed := a.rootsFailed && time.Now().After(a.rootsRetryAt)
	a.mu.Unlock()
	if !failed {
		return
	}
	set, err := a.st.Anchors(ctx)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if set.Sequence != a.applied {
		return // refresh applies it, roots and all
	}
	a.applyRoots(set)
	a.publishCRLs()
}

// startRoot starts the responder and CRL of the root of an.
func (a *Runtime) startRoot(ski string, an *store.Anchor) error {
	p, err := parseAnchor(an)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	key := &rootKey{keys: a.keys, ref: an.RootKey, pub: p.root.PublicKey}
	iss, err := ca.NewIssuer(p.root, key, p.root)
	if err != nil {
		return err
	}
	pub, err := crl.New(crl.Options{Issuer: iss, Source: noRevocations{}, Validity: rootCRLValidity, Logger: a.log})
	if err != nil {
		return err
	}
	if _, err := pub.Build(ctx); err != nil {
		return err
	}
	rr := &rootResponder{root: p.root, key: key, ocspKey: a.ocspKey, responder: a.responder, ttl: a.cfg.OCSP.ResponderTTL.Std(),
		log: a.log.With("root", ski)}
	if err := rr.renew(ctx); err != nil {
		return fmt.Errorf("root OCSP responder certificate: %w", err)
	}
	a.presign(ctx, ski)
	runCtx, stop := context.WithCancel(a.ctx)
	run := &runningRoot{root: p.root, publisher: pub, cancel: stop, done: make(chan struct{})}
	a.runLoops(run.done,
		func() { pub.Run(runCtx) },
		func() { RenewLoop(runCtx, "root OCSP responder certificate", rr.notAfter, rr.renew, rr.log) },
		func() { a.presignLoop(runCtx, ski) })
	a.roots[ski] = run
	a.log.Info("root OCSP responder and CRL running", "root", ski, "root_sha256", fingerprint(p.root))
	return nil
}

// runLoops runs each of loops in a goroutine of its own (a CRL publisher
// and its responder certificate's renewal, for one issuing CA or root),
// counted in a.wg, and closes done when all have returned.
func (a *Runtime) runLoops(done chan struct{}, loops ...func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(done)
		var wg sync.WaitGroup
		for _, loop := range loops {
			wg.Go(loop)
		}
		wg.Wait()
	}()
}

// presign signs the responses about the issuing CAs of root ski, so the
// first relying service asking does not wait.
func (a *Runtime) presign(ctx context.Context, ski string) {
	for _, rec := range *a.caRecords.certs.Load() {
		if rec.IssuerSKI != ski {
			continue
		}
		sn, _ := new(big.Int).SetString(rec.Serial, 16)
		if _, err := a.responder.Lookup(ctx, ski, sn); err != nil {
			a.log.Warn("pre-signing an issuing CA's OCSP response failed; the first request signs it", "serial", rec.Serial, "err", err)
		}
	}
}

// presignLoop keeps the responses about root ski's issuing CAs signed
// ahead of requests: every third of ocsp.validity, so none is older than
// two thirds of it (when the responder would sign it on a request).
func (a *Runtime) presignLoop(ctx context.Context, ski string) {
	t := time.NewTicker(max(a.cfg.OCSP.Validity.Std()/3, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.presign(ctx, ski)
		}
	}
}

// publishCRLs publishes the CRLs of the running issuing CAs and roots.
// a.mu is held.
func (a *Runtime) publishCRLs() {
	crls := map[string]*crl.Publisher{}
	for ski, rr := range a.roots {
		crls[ski] = rr.publisher
	}
	for id, ri := range a.running {
		crls[ri.issuer.SKI] = ri.publisher
		if id == a.activeID {
			crls[""] = ri.publisher
		}
	}
	a.crls.Store(&crls)
}

// rootResponder keeps the delegated OCSP responder certificate of a root.
type rootResponder struct {
	root      *x509.Certificate
	key       crypto.Signer
	ocspKey   crypto.Signer
	responder *ocsp.Responder
	ttl       time.Duration
	log       *slog.Logger
	cur       atomic.Pointer[x509.Certificate]
}

func (r *rootResponder) renew(context.Context) error {
	cert, err := ca.NewRootResponder(r.root, r.key, r.ocspKey.Public(), time.Now(), r.ttl)
	if err != nil {
		return err
	}
	if err := r.responder.SetSigner(&ocsp.Signer{Issuer: r.root, Cert: cert, Key: r.ocspKey}); err != nil {
		return err
	}
	r.cur.Store(cert)
	r.log.Info("root OCSP responder certificate issued", "serial", hex.EncodeToString(cert.SerialNumber.Bytes()), "not_after", cert.NotAfter.Format(time.RFC3339))
	return nil
}

func (r *rootResponder) notAfter() (time.Time, time.Time) {
	c := r.cur.Load()
	return c.NotBefore, c.NotAfter
}
