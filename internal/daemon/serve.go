package daemon

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ServeOptions are the choices `agentca serve` takes.
type ServeOptions struct {
	Dir string
	// HTTPS and HTTP override the configured listen addresses when set.
	HTTPS, HTTP string
	Password    []byte
	Logger      *slog.Logger
	// Ready, when set, is called once every listener is accepting.
	Ready func(httpsAddr, httpAddr string)
	// AcceptRollback starts on a store whose issuance log does not hold
	// the last tree head the CA published (D/sth.json), logging the loss
	// as an audit line, instead of refusing it.
	AcceptRollback bool
}

// Server timeouts; every listener has them.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	drainTimeout      = 20 * time.Second
	serverCertTTL     = config.Ceiling
	serverProvisioner = "agentca-server"
)

// Serve runs the daemon until ctx is done or SIGTERM/SIGINT arrives, then
// drains the listeners and returns nil. SIGHUP reloads the provisioners
// from agentca.json.
func Serve(ctx context.Context, opts ServeOptions) error {
	tuneGC()
	nofile := raiseFileLimit()
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, config.FileName)
	if err := checkStateDir(dir); err != nil {
		return err
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	// As read, before flags and the listeners change it: what a SIGHUP
	// compares the file with.
	started := *cfg
	if opts.HTTPS != "" {
		cfg.Listen.HTTPS = opts.HTTPS
	}
	if opts.HTTP != "" {
		cfg.Listen.HTTP = opts.HTTP
	}
	keys, err := openKeys(ctx, dir, cfg.Keys, opts.Password)
	if err != nil {
		return err
	}
	defer func() {
		if err := keys.Close(); err != nil {
			log.Error("closing the KMS", "err", err)
		}
	}()
	logSigner, err := loadLogSigner(dir, keys)
	if err != nil {
		return err
	}
	// The store cues the log's tree head signer after each commit that
	// appended to the log.
	logAppended := make(chan struct{}, 1)
	cueLog := func() {
		select {
		case logAppended <- struct{}{}:
		default:
		}
	}
	commits := newCommitMetrics()
	st, err := openBound(ctx, dir, cfg.Storage, cueLog, commits.observe, false, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()
	// agentca migrate may have moved the CA to etcd while this process
	// waited for the bbolt file it released: serve what agentca.json
	// names now, never the file left behind.
	if now, err := config.Load(cfgPath); err != nil {
		return err
	} else if !reflect.DeepEqual(now.Storage, cfg.Storage) {
		return fmt.Errorf("%s: the storage section changed while the store was being opened (agentca migrate?); start again", cfgPath)
	}
	if err := checkRollback(ctx, dir, storeName(dir, cfg.Storage), st, logSigner.Public(), opts.AcceptRollback, log); err != nil {
		return err
	}
	httpsLn, err := net.Listen("tcp", cfg.Listen.HTTPS)
	if err != nil {
		return fmt.Errorf("https listener: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		httpsLn.Close()
		return fmt.Errorf("http listener: %w", err)
	}
	defer httpsLn.Close()
	defer httpLn.Close()
	// A listen port of 0 picks a free port; the public URLs follow it.
	cfg.PublicURLs.HTTPS = withActualPort(cfg.PublicURLs.HTTPS, httpsLn.Addr())
	cfg.PublicURLs.HTTP = withActualPort(cfg.PublicURLs.HTTP, httpLn.Addr())
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The issuer is set by the anchors below.
	authority, err := ca.New(ca.Options{TrustDomain: cfg.TrustDomain, Recorder: st,
		MinTTL: cfg.Leaf.MinTTL.Std(), Logger: log, PublicHTTP: cfg.PublicURLs.HTTP})
	if err != nil {
		return err
	}
	ocspKey, err := keys.signer(roleOCSP, true)
	if err != nil {
		return err
	}
	caRecs := &caRecords{Store: st} // issuing CAs, answered for by their roots (rootstatus.go)
	responder, err := ocsp.New(ocsp.Options{Store: caRecs, Validity: cfg.OCSP.Validity.Std(), Logger: log,
		Fresh: freshWithin(st, cfg.OCSP.MaxStaleness.Std())})
	if err != nil {
		return err
	}
	tokens, err := tokenOptions(cfg, keys)
	if err != nil {
		return err
	}
	if tokens.Exchange, err = exchangeOptions(dir, cfg, tokens, log); err != nil {
		return err
	}
	pol, err := LoadPolicy(dir, cfg)
	if err != nil {
		return err
	}
	// Everything that checks the configuration and the stored state comes
	// before the anchors start (their start logs and issues the OCSP
	// responder certificates), so a refusal is one line.
	provs, err := newProvisioners(cfg, st, log)
	if err != nil {
		return err
	}
	tlog, err := api.NewLog(ctx, api.LogOptions{Store: st, Signer: logSigner, Appended: logAppended, Logger: log})
	if err != nil {
		return fmt.Errorf("issuance log: %w", err)
	}
	sthFile := &treeHeadSaver{dir: dir, latest: tlog.Latest, log: log}
	sthFile.save()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerStoreMetrics(reg, st)
	reg.MustRegister(commits.latency, commits.size)
	certs := &serverCerts{authority: authority, cfg: cfg, log: log}
	anch := newAnchors(ctx, &anchors{dir: dir, cfg: cfg, keys: keys, st: st, authority: authority, responder: responder,
		ocspKey: ocspKey, caRecords: caRecs, log: log, minStaged: maxLeafTTL(cfg), onActivate: certs.renewUnderNewIssuer,
		serverIssuer: certs.issuerSKI}, reg)
	// On every return: stop the per-issuer goroutines (CRL, OCSP
	// responder renewals) and wait for them.
	defer func() { stop(); anch.Wait() }()
	if err := anch.bootstrap(ctx); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	if err := anch.refresh(ctx); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	issuer := authority.Issuer()
	if issuer == nil {
		if err := anch.ActiveError(); err != nil {
			return err
		}
		return errors.New("no active trust anchor; refusing to start")
	}
	// A JWT-SVID key problem costs JWT-SVIDs (503), not the X.509 CA.
	if err := anch.ensureJWTKey(ctx); err != nil {
		log.Error("the active anchor has no JWT-SVID key; JWT-SVIDs are refused until one is made at a later start", "err", err)
	} else if err := anch.refresh(ctx); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	// A revocation, made here or by another replica, shows at once in
	// OCSP and (debounced) in its issuer's CRL.
	revoked := func(ctx context.Context, rec *store.Certificate) {
		responder.Revoked(ctx, rec)
		anch.revoked(rec)
		sthFile.noteRevoked(rec)
	}
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: anch.Trust(), Provisioners: provs, Logger: log, Registry: reg,
		OCSP: responder, CRLs: anch, Admins: cfg.Admins, Log: tlog, Anchors: anch,
		Tokens: tokens, JWTSVID: jwtSVIDOptions(cfg), Policy: pol, OnRevoke: revoked, Workloads: st,
		Ready: readyWithin(st, max(cfg.OCSP.MaxStaleness.Std(), 3*time.Second))})
	if err != nil {
		return err
	}
	anch.setTrustFunc(srv.SetTrust)
	reg.MustRegister(newOpsCollector(anch, responder, certs))
	// Replicas sharing the store (etcd): follow what the others change.
	stopWatch := startStoreWatch(ctx, st, storeHooks{
		Revoked:    revoked,
		LogChanged: tlog.Offer,
		AnchorsChanged: func(ctx context.Context) {
			if err := anch.refresh(ctx); err != nil && ctx.Err() == nil {
				log.Error("reading the trust anchors failed", "err", err)
			}
		},
		Resync: func(context.Context) {
			// Revocations may have been missed: sign every OCSP
			// response afresh and rebuild every CRL.
			responder.Forget(time.Now().Add(100 * 365 * 24 * time.Hour))
			anch.rebuildCRLs()
		},
	}, log)
	defer stopWatch()

	if err := certs.renew(ctx); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	adminLn, err := listenAdmin(filepath.Join(dir, AdminSocket))
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: certs.get,
		// Before the client's handshake signature is checked.
		VerifyPeerCertificate: capClientKey,
	}
	servers := []*http.Server{
		newHTTPServer(srv.HTTPSHandler(), log, tlsConf),
		newHTTPServer(srv.HTTPHandler(), log, nil),
		newHTTPServer(withBackup(srv.AdminHandler(), st, log), log, nil),
	}
	nHTTPS, nHTTP, nAdmin := connectionBounds(cfg.Limits, nofile)
	if sum := uint64(nHTTPS + nHTTP + nAdmin + fdReserve); sum > nofile {
		log.Warn("the connection limits add up to more than the process's file limit: connections beyond it fail with 'too many open files', and the admin socket may not answer",
			"limits", fmt.Sprintf("https=%d http=%d admin=%d", nHTTPS, nHTTP, nAdmin), "file_limit", nofile, "reserve", fdReserve)
	}
	lm := newListenerMetrics(reg)
	bounded := []*boundedListener{newBoundedListener(httpsLn, "https", nHTTPS, log, lm),
		newBoundedListener(httpLn, "http", nHTTP, log, lm), newBoundedListener(adminLn, "admin", nAdmin, log, lm)}
	for i, b := range bounded {
		servers[i].ConnState = b.connState
	}
	lns := []net.Listener{tls.NewListener(bounded[0], tlsConf), bounded[1], bounded[2]}
	errc := make(chan error, len(servers))
	// The log's signer outlives the listeners' drain: a request whose
	// certificate is committed waits for the tree head that includes it.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logDone := make(chan struct{})
	go func() { defer close(logDone); tlog.Run(logCtx) }()
	for i, s := range servers {
		go func() {
			if err := s.Serve(lns[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var wg sync.WaitGroup
	wg.Add(6)
	go func() { defer wg.Done(); sthFile.run(ctx) }()
	go func() { defer wg.Done(); renewLoop(ctx, "server certificate", certs.notAfter, certs.renew, log) }()
	go func() { defer wg.Done(); anch.watch(ctx) }()
	go func() { defer wg.Done(); reloadPolicyOnHUP(ctx, dir, cfgPath, srv, log) }()
	go func() { defer wg.Done(); reloadOnHUP(ctx, cfgPath, &started, st, srv, log) }()
	go func() { defer wg.Done(); sweepLoop(ctx, st, cfg.Storage.RetentionOrDefault(), log) }()

	log.Info("serving", "https", httpsLn.Addr().String(), "http", httpLn.Addr().String(),
		"admin", adminLn.Addr().String(), "trust_domain", cfg.TrustDomain, "issuer", issuer.SKI,
		"max_connections", fmt.Sprintf("https=%d http=%d admin=%d (file limit %d)", nHTTPS, nHTTP, nAdmin, nofile),
		"root_sha256", Fingerprint(issuer.Root))
	if opts.Ready != nil {
		opts.Ready(httpsLn.Addr().String(), httpLn.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	log.Info("draining")
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(dctx); err != nil {
			log.Warn("drain incomplete", "err", err)
		}
	}
	stop()
	wg.Wait()
	stopLog() // saves the latest tree head
	<-logDone
	sthFile.save()
	log.Info("stopped")
	return serveErr
}

func newHTTPServer(h http.Handler, log *slog.Logger, tlsConf *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// reloadOnHUP re-reads agentca.json on SIGHUP and swaps in the new
// provisioners and admins together (the policy has its own reload,
// reloadPolicyOnHUP); a bad file keeps the running set and logs why.
// Every other setting that differs from what serve started with is named
// in a WARN line: it takes effect at the next start.
func reloadOnHUP(ctx context.Context, cfgPath string, started *config.Config, st store.Store, srv *api.Server, log *slog.Logger) {
	onSIGHUP(ctx, func() {
		cfg, err := config.Load(cfgPath)
		if err == nil {
			var provs map[string]*api.Provisioner
			if provs, err = newProvisioners(cfg, st, log); err == nil {
				srv.SetProvisioners(provs)
				srv.SetAdmins(cfg.Admins)
				log.Info("reloaded provisioners", "count", len(provs), "admins", len(cfg.Admins))
				if changed := needRestart(started, cfg); len(changed) > 0 {
					log.Warn("agentca.json: these settings changed but apply only at the next start; restart agentca serve",
						"settings", strings.Join(changed, ", "))
				}
				return
			}
		}
		log.Error("reload failed; keeping the running configuration", "err", err)
	})
}

// onSIGHUP calls reload after each SIGHUP until ctx is done. Every
// caller gets every signal.
func onSIGHUP(ctx context.Context, reload func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload()
		}
	}
}

// serverCerts keeps the HTTPS listener's certificate, issued by the CA
// itself and renewed at two thirds of its lifetime.
type serverCerts struct {
	authority *ca.Authority
	cfg       *config.Config
	log       *slog.Logger
	cur       atomic.Pointer[tls.Certificate]
}

func (s *serverCerts) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cur.Load(), nil }

func (s *serverCerts) renew(ctx context.Context) error {
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		return err
	}
	var ips []string
	for _, a := range []string{s.cfg.Listen.HTTPS, hostOf(s.cfg.PublicURLs.HTTPS)} {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !slices.Contains(ips, ip.String()) {
			ips = append(ips, ip.String())
		}
	}
	issued, err := s.authority.Issue(ctx, &ca.Request{
		PublicKey: key.Public(), SPIFFEID: config.ServerSPIFFEID(s.cfg.TrustDomain), CAIdentity: true,
		DNSNames: s.cfg.ServerDNSNames, IPAddresses: ips, Provisioner: serverProvisioner,
		TTL: serverCertTTL, MaxTTL: serverCertTTL,
	})
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		return err
	}
	s.cur.Store(&tls.Certificate{Certificate: append([][]byte{issued.DER}, issued.Issuer.ChainDER()...), PrivateKey: key, Leaf: leaf})
	s.log.Info("server certificate issued", "serial", issued.Serial, "not_after", issued.NotAfter.Format(time.RFC3339))
	return nil
}

// issuerSKI is the subject key identifier (hex) of the issuer of the
// current certificate.
func (s *serverCerts) issuerSKI() string {
	if c := s.cur.Load(); c != nil {
		return hex.EncodeToString(c.Leaf.AuthorityKeyId)
	}
	return ""
}

// renewUnderNewIssuer renews the certificate at once after an anchor
// activation, retrying (1 s, doubling, at most 30 s) until it succeeds or
// ctx ends: until then agents that only trust the new root cannot reach
// the CA, and the old anchor cannot be retired.
func (s *serverCerts) renewUnderNewIssuer(ctx context.Context) {
	go func() {
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			err := s.renew(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			s.log.Error("server certificate renewal under the new issuing CA failed; retrying", "err", err, "in", wait.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}()
}

func (s *serverCerts) notAfter() (time.Time, time.Time) {
	leaf := s.cur.Load().Leaf
	return leaf.NotBefore, leaf.NotAfter
}

// responderCerts keeps the delegated OCSP responder certificate of one
// issuing CA, issued for the persistent OCSP key and renewed at two
// thirds of its lifetime.
type responderCerts struct {
	authority *ca.Authority
	issuer    *ca.Issuer
	responder *ocsp.Responder
	key       crypto.Signer
	ttl       time.Duration
	validity  time.Duration
	log       *slog.Logger
	cur       atomic.Pointer[x509.Certificate]
}

func (r *responderCerts) renew(ctx context.Context) error {
	issued, err := r.authority.IssueResponderFrom(ctx, r.issuer, r.key.Public(), r.ttl)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		return err
	}
	if err := r.responder.SetSigner(&ocsp.Signer{Issuer: issued.Issuer.Cert, Cert: cert, Key: r.key}); err != nil {
		return err
	}
	r.cur.Store(cert)
	// Responses nobody asked for during a whole validity period go.
	r.responder.Forget(time.Now().Add(-r.validity))
	r.log.Info("OCSP responder certificate issued", "serial", issued.Serial, "not_after", issued.NotAfter.Format(time.RFC3339))
	return nil
}

func (r *responderCerts) notAfter() (time.Time, time.Time) {
	c := r.cur.Load()
	return c.NotBefore, c.NotAfter
}

// renewLoop calls renew at two thirds of the current certificate's
// lifetime (validity returns notBefore, notAfter), retrying every minute
// (sooner near expiry) after a failure, until ctx is done.
func renewLoop(ctx context.Context, what string, validity func() (time.Time, time.Time), renew func(context.Context) error, log *slog.Logger) {
	for {
		nb, na := validity()
		wait := max(time.Until(nb.Add(na.Sub(nb)*2/3)), time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		for {
			err := renew(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			retry := min(time.Minute, max(time.Until(na)/4, time.Second))
			log.Error(what+" renewal failed; retrying", "err", err, "in", retry.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

// withActualPort replaces a ":0" port in URL u with addr's port.
func withActualPort(u string, addr net.Addr) string {
	p, err := url.Parse(u)
	if err != nil || p.Port() != "0" {
		return u
	}
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return u
	}
	p.Host = net.JoinHostPort(p.Hostname(), port)
	return p.String()
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Hostname()
}
