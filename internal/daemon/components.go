package daemon

// The components of a serving daemon, built in order by Serve: each step
// builds one from the ones before it, and what a step opens is closed, in
// reverse order, when Serve returns.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/anchors"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// daemon holds the components of `agentca serve` as they are built.
type daemon struct {
	opts    ServeOptions
	log     *slog.Logger
	nofile  uint64
	dir     string
	cfgPath string
	cfg     *config.Config
	// started is agentca.json as read, before flags and the listeners
	// changed it: what a SIGHUP compares the file with.
	started config.Config
	closers []func()

	keys        *caKeys
	logSigner   *translog.Signer
	batchHeads  *logsign.BatchSigner
	logAppended chan struct{}
	commits     *commitMetrics
	st          store.Store

	httpsLn, httpLn net.Listener

	tokens *api.TokenOptions
	policy *api.Policy
	provs  map[string]*api.Provisioner

	authority *ca.Authority
	responder *ocsp.Responder
	tlog      *logsign.Signer
	sthFile   *treeHeadSaver
	reg       *prometheus.Registry
	certs     *serverCerts
	anchors   *anchors.Runtime
	// feed is the revocation notifier the store's watch fills (etcd);
	// nil on a store that reports no changes.
	feed *revocation.Feed
	// clientCerts caches the API's client certificate records; the
	// notifier tells it of every revocation.
	clientCerts *api.ClientCerts
	srv         *api.Server

	servers []*http.Server
	lns     []net.Listener
	adminLn net.Listener
	limits  string
}

// onClose runs f when Serve returns, before what was opened earlier is
// closed.
func (d *daemon) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// loadConfig reads agentca.json from the state directory and applies the
// listen address flags.
func (d *daemon) loadConfig() error {
	dir, err := filepath.Abs(d.opts.Dir)
	if err != nil {
		return err
	}
	d.dir, d.cfgPath = dir, filepath.Join(dir, config.FileName)
	if err := checkStateDir(dir); err != nil {
		return err
	}
	if d.cfg, err = config.Load(d.cfgPath); err != nil {
		return err
	}
	d.started = *d.cfg
	if d.opts.HTTPS != "" {
		d.cfg.Listen.HTTPS = d.opts.HTTPS
	}
	if d.opts.HTTP != "" {
		d.cfg.Listen.HTTP = d.opts.HTTP
	}
	return nil
}

// openKeys opens the CA keys (the KMS, if any) and the log signer.
func (d *daemon) openKeys(ctx context.Context) error {
	keys, err := openKeys(ctx, d.dir, d.cfg.Keys, d.opts.Password)
	if err != nil {
		return err
	}
	d.keys = keys
	d.onClose(func() {
		if err := keys.Close(); err != nil {
			d.log.Error("closing the KMS", "err", err)
		}
	})
	d.logSigner, err = loadLogSigner(d.dir, keys)
	return err
}

// openStore opens the store bound to the state directory and checks that
// it holds the last tree head the CA published.
func (d *daemon) openStore(ctx context.Context) error {
	// The store cues the log's tree head signer after each commit that
	// appended to the log.
	d.logAppended = make(chan struct{}, 1)
	cueLog := func() {
		select {
		case d.logAppended <- struct{}{}:
		default:
		}
	}
	// A store that can (etcd) signs each batch's tree head in the
	// batch's transaction with batchHeads (package logsign).
	d.batchHeads = logsign.NewBatchSigner(d.logSigner, d.log)
	d.commits = newCommitMetrics()
	st, err := openBound(ctx, d.dir, d.cfg.Storage, cueLog, d.commits.observe, d.batchHeads, false, d.log)
	if err != nil {
		return err
	}
	d.st = st
	d.onClose(func() {
		if err := st.Close(); err != nil {
			d.log.Error("closing the store", "err", err)
		}
	})
	// agentca migrate may have moved the CA to etcd while this process
	// waited for the bbolt file it released: serve what agentca.json
	// names now, never the file left behind.
	if now, err := config.Load(d.cfgPath); err != nil {
		return err
	} else if !reflect.DeepEqual(now.Storage, d.cfg.Storage) {
		return fmt.Errorf("%s: the storage section changed while the store was being opened (agentca migrate?); start again", d.cfgPath)
	}
	return checkRollback(ctx, d.dir, storeName(d.dir, d.cfg.Storage), st, d.logSigner.Public(), d.opts.AcceptRollback, d.log)
}

// listen opens the HTTPS and HTTP listeners; a listen port of 0 picks a
// free port, and the public URLs follow it.
func (d *daemon) listen(context.Context) error {
	httpsLn, err := net.Listen("tcp", d.cfg.Listen.HTTPS)
	if err != nil {
		return fmt.Errorf("https listener: %w", err)
	}
	d.onClose(func() { httpsLn.Close() })
	httpLn, err := net.Listen("tcp", d.cfg.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	d.onClose(func() { httpLn.Close() })
	d.httpsLn, d.httpLn = httpsLn, httpLn
	d.cfg.PublicURLs.HTTPS = withActualPort(d.cfg.PublicURLs.HTTPS, httpsLn.Addr())
	d.cfg.PublicURLs.HTTP = withActualPort(d.cfg.PublicURLs.HTTP, httpLn.Addr())
	return nil
}

// buildLog builds the issuance log's tree head signer, the file that
// keeps its latest tree head, and the metrics registry.
func (d *daemon) buildLog(ctx context.Context) error {
	tlog, err := logsign.New(ctx, logsign.Options{Store: d.st, Key: d.logSigner, Batches: d.batchHeads, Appended: d.logAppended, Logger: d.log})
	if err != nil {
		return fmt.Errorf("issuance log: %w", err)
	}
	d.tlog = tlog
	d.sthFile = &treeHeadSaver{dir: d.dir, latest: tlog.Latest, log: d.log}
	d.sthFile.save()
	d.reg = prometheus.NewRegistry()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreMetrics(d.reg, d.st)
	d.reg.MustRegister(d.commits.latency, d.commits.size)
	return nil
}

// startAnchors builds the CA (its issuer set by the anchors), the OCSP
// responder, and the anchor runtime over the stored anchor set.
func (d *daemon) startAnchors(ctx context.Context) error {
	cfg := d.cfg
	authority, err := ca.New(ca.Options{TrustDomain: cfg.TrustDomain, Recorder: d.st,
		MinTTL: cfg.Leaf.MinTTL.Std(), Logger: d.log, PublicHTTP: cfg.PublicURLs.HTTP, Decider: d.policy})
	if err != nil {
		return err
	}
	ocspKey, err := d.keys.signer(roleOCSP, true)
	if err != nil {
		return err
	}
	caRecs := anchors.NewCARecords(d.st) // issuing CAs, answered for by their roots
	responder, err := ocsp.New(ocsp.Options{Store: caRecs, Validity: cfg.OCSP.Validity.Std(), Logger: d.log,
		Fresh: freshWithin(d.st, cfg.OCSP.MaxStaleness.Std())})
	if err != nil {
		return err
	}
	d.authority, d.responder = authority, responder
	d.certs = &serverCerts{authority: authority, cfg: cfg, log: d.log}
	if err := bootstrapAnchors(ctx, d.dir, d.st, d.keys); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	rt, err := anchors.New(ctx, anchors.Options{Dir: d.dir, Config: cfg, Keys: anchorKeys{d.keys}, Store: d.st,
		Authority: authority, Responder: responder, OCSPKey: ocspKey, CARecords: caRecs, Logger: d.log, Registry: d.reg,
		OnActivate: d.certs.renewUnderNewIssuer, ServerIssuer: d.certs.issuerSKI})
	if err != nil {
		return err
	}
	d.anchors = rt
	// On every return: stop the per-issuer goroutines (CRL, OCSP
	// responder renewals) and wait for them.
	d.onClose(rt.Close)
	return nil
}

// checkConfig builds what the configuration alone decides (the token
// endpoint, the policy, the provisioners): it comes before the anchors
// start (their start logs and issues the OCSP responder certificates),
// so a refusal is one line.
func (d *daemon) checkConfig(context.Context) error {
	var err error
	if d.tokens, err = tokenOptions(d.cfg, d.keys); err != nil {
		return err
	}
	if d.tokens.Exchange, err = exchangeOptions(d.dir, d.cfg, d.tokens, d.log); err != nil {
		return err
	}
	if d.policy, err = LoadPolicy(d.dir, d.cfg); err != nil {
		return err
	}
	d.provs, err = newProvisioners(d.cfg, d.st, d.log)
	return err
}

// buildAPI builds the revocation service and the API over everything
// before.
func (d *daemon) buildAPI(ctx context.Context) error {
	cfg, st := d.cfg, d.st
	rev, err := d.revocation()
	if err != nil {
		return err
	}
	// SPIFFE federation (federation.go): foreign bundles, fetched in the
	// background until Serve returns.
	fed, stopFed, err := startFederation(ctx, d.dir, cfg, st, d.reg, d.log)
	if err != nil {
		return err
	}
	d.onClose(stopFed)
	srv, err := api.New(api.Options{Authority: d.authority, Store: st, Trust: d.anchors, Provisioners: d.provs, Logger: d.log, Registry: d.reg,
		OCSP: d.responder, CRLs: d.anchors, Admins: cfg.Admins, Log: d.tlog, LogReader: st, Anchors: d.anchors,
		Tokens: d.tokens, JWTSVID: jwtSVIDOptions(cfg), Revocation: rev, ClientCerts: d.clientCerts, Workloads: st,
		Ready: readyWithin(st, max(cfg.OCSP.MaxStaleness.Std(), 3*time.Second)), Federation: fed})
	if err != nil {
		return err
	}
	d.srv = srv
	d.reg.MustRegister(newOpsCollector(d.anchors, d.responder, d.certs))
	return nil
}

// revocation is the one service that makes revocations. A revocation,
// made here or by another replica, shows at once in OCSP and (debounced)
// in its issuer's CRL and the API's client certificate cache: on a store
// that reports its changes (etcd) through the store's watch alone, else
// told by the service. The client certificate cache, like the OCSP
// responder's "good" answers, is used on etcd only while the watch is
// proven fresh within ocsp.max_staleness.
func (d *daemon) revocation() (*revocation.Service, error) {
	d.clientCerts = api.NewClientCerts(0, freshWithin(d.st, d.cfg.OCSP.MaxStaleness.Std()))
	caches := revocation.CacheFunc(func(ctx context.Context, rec *store.Certificate) {
		d.clientCerts.Revoked(ctx, rec)
		d.responder.Revoked(ctx, rec)
		d.anchors.Revoked(ctx, rec)
		d.sthFile.noteRevoked(rec)
	})
	var notifier revocation.Notifier = revocation.Direct(caches)
	if _, ok := d.st.(store.Watcher); ok {
		d.feed = revocation.NewFeed(caches)
		notifier = d.feed
	}
	return revocation.New(revocation.Options{Store: d.st, Workloads: d.st, Notifier: notifier, Ceiling: identity.Ceiling, Logger: d.log})
}

// followStore follows what other replicas sharing the store (etcd)
// change.
func (d *daemon) followStore(ctx context.Context) error {
	h := storeHooks{
		LogChanged: d.tlog.Offer,
		AnchorsChanged: func(ctx context.Context) {
			if err := d.anchors.Refresh(ctx); err != nil && ctx.Err() == nil {
				d.log.Error("reading the trust anchors failed", "err", err)
			}
		},
		Resync: func(context.Context) {
			// Revocations may have been missed: forget every cached
			// client certificate, sign every OCSP response afresh
			// and rebuild every CRL.
			d.clientCerts.Forget()
			d.responder.Forget(time.Now().Add(100 * 365 * 24 * time.Hour))
			d.anchors.RebuildCRLs()
			if d.feed != nil {
				d.feed.Resynced()
			}
		},
	}
	if d.feed != nil {
		h.Revoked = d.feed.Deliver
	}
	d.onClose(startStoreWatch(ctx, d.st, h, d.log))
	return nil
}

// buildServers issues the server certificate and builds the three HTTP
// servers on bounded listeners (HTTPS, HTTP, the admin socket).
func (d *daemon) buildServers(ctx context.Context) error {
	if err := d.certs.renew(ctx); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	adminLn, err := listenAdmin(filepath.Join(d.dir, AdminSocket))
	if err != nil {
		return err
	}
	d.adminLn = adminLn
	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: d.certs.get,
		// Before the client's handshake signature is checked.
		VerifyPeerCertificate: capClientKey,
		// No TLS 1.3 session tickets: a resumed session carries the
		// client certificate of the handshake that made the ticket, so
		// an agent that renewed would be seen as its old certificate;
		// and an agent renews on a new connection every few minutes,
		// so each ticket was CPU (its encryption, with the certificate
		// chain inside) spent for nothing.
		SessionTicketsDisabled: true,
	}
	d.servers = []*http.Server{
		newHTTPServer(d.srv.HTTPSHandler(), d.log, tlsConf),
		newHTTPServer(d.srv.HTTPHandler(), d.log, nil),
		newHTTPServer(withBackup(d.srv.AdminHandler(), d.st, d.log), d.log, nil),
	}
	nHTTPS, nHTTP, nAdmin := connectionBounds(d.cfg.Limits, d.nofile)
	d.limits = fmt.Sprintf("https=%d http=%d admin=%d", nHTTPS, nHTTP, nAdmin)
	if sum := uint64(nHTTPS + nHTTP + nAdmin + fdReserve); sum > d.nofile {
		d.log.Warn("the connection limits add up to more than the process's file limit: connections beyond it fail with 'too many open files', and the admin socket may not answer",
			"limits", d.limits, "file_limit", d.nofile, "reserve", fdReserve)
	}
	lm := newListenerMetrics(d.reg)
	bounded := []*boundedListener{newBoundedListener(d.httpsLn, "https", nHTTPS, d.log, lm),
		newBoundedListener(d.httpLn, "http", nHTTP, d.log, lm), newBoundedListener(adminLn, "admin", nAdmin, d.log, lm)}
	for i, b := range bounded {
		d.servers[i].ConnState = b.connState
	}
	d.lns = []net.Listener{tls.NewListener(bounded[0], tlsConf), bounded[1], bounded[2]}
	return nil
}

// bootstrapAnchors stores the anchor of a state directory made before
// anchors were stored (certs/root.pem and certs/issuing.pem with the
// configured keys), as active, when the store holds none.
func bootstrapAnchors(ctx context.Context, dir string, st store.Store, keys *caKeys) error {
	root, err := readCert(filepath.Join(dir, RootCertFile))
	if err != nil {
		return err
	}
	iss, err := readCert(filepath.Join(dir, IssuingCert))
	if err != nil {
		return err
	}
	errNoChange := errors.New("no change")
	_, err = st.UpdateAnchors(ctx, func(set *store.AnchorSet) error {
		if len(set.Anchors) > 0 {
			return errNoChange
		}
		at := iss.NotBefore
		set.Anchors = append(set.Anchors, store.Anchor{
			ID: ca.AnchorID(iss), State: store.AnchorActive, Root: root.Raw, Issuer: iss.Raw,
			RootKey: keys.ref(roleRoot), IssuerKey: keys.ref(roleIssuing), IssuerSKI: fmt.Sprintf("%x", iss.SubjectKeyId),
			StagedAt: at, ActivatedAt: at,
		})
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	return err
}
