package daemon

import (
	"context"
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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/anchors"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
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
	serverCertTTL     = identity.Ceiling
	serverProvisioner = anchors.ServerProvisioner
)

// Serve runs the daemon until ctx is done or SIGTERM/SIGINT arrives, then
// drains the listeners and returns nil. SIGHUP reloads the provisioners
// from agentca.json.
func Serve(ctx context.Context, opts ServeOptions) error {
	tuneGC()
	d := &daemon{opts: opts, log: opts.Logger, nofile: raiseFileLimit()}
	if d.log == nil {
		d.log = slog.Default()
	}
	defer d.close()
	if err := d.loadConfig(); err != nil {
		return err
	}
	if err := d.build(ctx, d.openKeys, d.openStore, d.listen); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.build(ctx, d.checkConfig, d.buildLog, d.startAnchors, d.buildAPI, d.followStore, d.buildServers); err != nil {
		return err
	}
	return d.run(ctx, stop)
}

// build runs steps in order until one fails.
func (d *daemon) build(ctx context.Context, steps ...func(context.Context) error) error {
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// run serves until ctx is done or a listener fails, then drains.
func (d *daemon) run(ctx context.Context, stop func()) error {
	errc := make(chan error, len(d.servers))
	// The log's signer outlives the listeners' drain: a request whose
	// certificate is committed waits for the tree head that includes it.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	logDone := make(chan struct{})
	go func() { defer close(logDone); d.tlog.Run(logCtx) }()
	for i, s := range d.servers {
		go func() {
			if err := s.Serve(d.lns[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	wg := d.runBackground(ctx)
	issuer := d.authority.Issuer()
	d.log.Info("serving", "https", d.httpsLn.Addr().String(), "http", d.httpLn.Addr().String(),
		"admin", d.adminLn.Addr().String(), "trust_domain", d.cfg.TrustDomain, "issuer", issuer.SKI,
		"max_connections", fmt.Sprintf("%s (file limit %d)", d.limits, d.nofile),
		"root_sha256", Fingerprint(issuer.Root))
	if d.opts.Ready != nil {
		d.opts.Ready(d.httpsLn.Addr().String(), d.httpLn.Addr().String())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		d.log.Error("listener failed", "err", serveErr)
	}
	d.log.Info("draining")
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	for _, s := range d.servers {
		if err := s.Shutdown(dctx); err != nil {
			d.log.Warn("drain incomplete", "err", err)
		}
	}
	stop()
	wg.Wait()
	stopLog() // saves the latest tree head
	<-logDone
	d.sthFile.save()
	d.log.Info("stopped")
	return serveErr
}

// runBackground starts the daemon's loops; they end when ctx is done.
func (d *daemon) runBackground(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() { d.sthFile.run(ctx) })
	wg.Go(func() { anchors.RenewLoop(ctx, "server certificate", d.certs.notAfter, d.certs.renew, d.log) })
	wg.Go(func() { d.anchors.Watch(ctx) })
	wg.Go(func() { reloadPolicyOnHUP(ctx, d.dir, d.cfgPath, d.srv, d.log) })
	wg.Go(func() { reloadOnHUP(ctx, d.cfgPath, &d.started, d.st, d.srv, d.log) })
	wg.Go(func() { sweepLoop(ctx, d.st, d.cfg.Storage.RetentionOrDefault(), d.log) })
	return &wg
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
		PublicKey: key.Public(), SPIFFEID: identity.ServerSPIFFEID(s.cfg.TrustDomain), CAIdentity: true,
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
