// Command tool-server is an "agent tool": an HTTPS service that serves a
// request only when the caller presents its agentca certificate and an
// access token agentca issued for that certificate, for this resource,
// with the required scope (verify/oauth). It answers 200 with the
// caller's SPIFFE ID (and, for a delegated token, a second line
// "sub=<subject> act=<newest actor> <- … <- <first actor>": who acts for
// whom); a stolen token, an expired one, another audience or
// a revoked certificate get 401, a missing scope 403.
//
//	agentca enroll --ca https://127.0.0.1:8443 --root agentca-data/roots.pem \
//	    --token "$(agentca token create --dir agentca-data --spiffe-id spiffe://example.org/tool/search)" --out ./tool-creds
//	go run ./examples/tool-server --ca https://127.0.0.1:8443 --root agentca-data/roots.pem \
//	    --creds ./tool-creds --listen 127.0.0.1:9443 --resource https://127.0.0.1:9443 --scope tools.read
//
//	TOKEN=$(agentca token get --ca https://127.0.0.1:8443 --out ./creds --scope tools.read --resource https://127.0.0.1:9443)
//	curl --cacert agentca-data/roots.pem --cert creds/cert.pem --key creds/key.pem \
//	    -H "Authorization: Bearer $TOKEN" https://127.0.0.1:9443/
//
// Without --creds it serves a throwaway self-signed certificate (its
// SHA-256 is logged), for trying it out only.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/verify/oauth"
)

// Options for run.
type Options struct {
	CAURL, RootFile, Listen, Resource, CredsDir, TrustDomain string
	Scopes                                                   []string
	// StatusMaxAge bounds how long a certificate's revocation status is
	// reused: a revoked certificate's tokens stop working within it.
	StatusMaxAge time.Duration
	Leeway       time.Duration
	// AllowDelegation accepts delegated tokens (token exchange): the
	// answer then says who acts for whom.
	AllowDelegation bool
	Log             *slog.Logger
	// Ready, when set, gets the listening address.
	Ready func(addr string)
}

func main() {
	var o Options
	var scopes string
	flag.StringVar(&o.CAURL, "ca", "", "the CA's HTTPS URL, the tokens' issuer (e.g. https://127.0.0.1:8443)")
	flag.StringVar(&o.RootFile, "root", "", "PEM file with the CA's roots (refreshed from the CA's /v1/roots)")
	flag.StringVar(&o.Listen, "listen", "127.0.0.1:9443", "address to serve HTTPS on")
	flag.StringVar(&o.Resource, "resource", "", "this service's resource identifier: tokens must name it (default https://LISTEN)")
	flag.StringVar(&scopes, "scope", "tools.read", "scopes a token must carry, comma-separated")
	flag.StringVar(&o.CredsDir, "creds", "", "agentca credentials directory (cert.pem, key.pem) for the server certificate, re-read when renewed")
	flag.StringVar(&o.TrustDomain, "trust-domain", "example.org", "the CA's trust domain")
	flag.DurationVar(&o.StatusMaxAge, "status-max-age", time.Second, "longest reuse of a certificate's OCSP/CRL status")
	flag.DurationVar(&o.Leeway, "leeway", 5*time.Second, "clock skew allowed on token times (0: none)")
	flag.BoolVar(&o.AllowDelegation, "allow-delegation", true, "accept delegated tokens (an act claim: an agent acting for a user or another agent)")
	flag.Parse()
	if o.CAURL == "" || o.RootFile == "" {
		fmt.Fprintln(os.Stderr, "tool-server: --ca and --root are required")
		os.Exit(2)
	}
	for s := range strings.SplitSeq(scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Scopes = append(o.Scopes, s)
		}
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tool-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o Options) error {
	if o.Resource == "" {
		o.Resource = "https://" + o.Listen
	}
	v, err := verify.New(verify.Options{TrustDomain: o.TrustDomain, BundleFile: o.RootFile,
		RootsURL: strings.TrimSuffix(o.CAURL, "/") + "/v1/roots", MaxCacheAge: o.StatusMaxAge, Logger: o.Log})
	if err != nil {
		return err
	}
	defer v.Close()
	leeway := o.Leeway
	if leeway == 0 {
		leeway = -1 // none
	}
	mw, err := oauth.New(oauth.Options{Verifier: v, Issuer: o.CAURL, Audience: o.Resource, Scopes: o.Scopes,
		Leeway: leeway, Logger: o.Log, AllowDelegation: o.AllowDelegation, TaskMaxAge: o.StatusMaxAge})
	if err != nil {
		return err
	}
	if err := mw.Refresh(ctx); err != nil {
		o.Log.Warn("the CA's token keys are not reachable yet; retrying on the first request", "err", err)
	}
	certs := &serverCert{dir: o.CredsDir, log: o.Log}
	if _, err := certs.get(nil); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := oauth.FromContext(r.Context())
			_, _ = io.WriteString(w, c.SPIFFEID+"\n")
			if len(c.Actors) > 0 {
				// Who acts for whom: the subject, then the actors,
				// newest (the caller) first.
				line := fmt.Sprintf("sub=%s act=%s", c.Subject, strings.Join(c.Actors, " <- "))
				_, _ = io.WriteString(w, line+"\n")
				o.Log.Info("delegated request", "subject", c.Subject, "subject_issuer", c.SubjectIssuer,
					"actors", strings.Join(c.Actors, " <- "), "task", c.Task, "path", r.URL.Path)
			}
		})),
		// Client certificates are requested, not verified in the
		// handshake: the middleware checks them on every request, so a
		// refusal is a 401 the caller can read, not a TLS alert.
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert, GetCertificate: certs.get},
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	o.Log.Info("serving", "addr", ln.Addr().String(), "resource", o.Resource, "scopes", strings.Join(o.Scopes, " "), "issuer", o.CAURL)
	if o.Ready != nil {
		o.Ready(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// serverCert serves the credentials in dir, re-read when cert.pem
// changes, or a throwaway self-signed certificate without dir.
type serverCert struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex
	mtime time.Time
	cur   *tls.Certificate
}

func (s *serverCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir == "" {
		if s.cur == nil {
			c, err := selfSigned()
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(c.Certificate[0])
			s.log.Warn("no --creds: serving a throwaway self-signed certificate", "sha256", hex.EncodeToString(sum[:]))
			s.cur = c
		}
		return s.cur, nil
	}
	fi, err := os.Stat(filepath.Join(s.dir, "cert.pem"))
	if err != nil {
		if s.cur != nil {
			return s.cur, nil
		}
		return nil, err
	}
	if s.cur == nil || !fi.ModTime().Equal(s.mtime) {
		cr, _, err := agent.LoadFiles(s.dir)
		if err != nil {
			if s.cur != nil {
				s.log.Warn("re-reading the server certificate failed; keeping the current one", "err", err)
				return s.cur, nil
			}
			return nil, err
		}
		s.cur, s.mtime = cr.TLSCertificate(), fi.ModTime()
	}
	return s.cur, nil
}

func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, errors.Join(errors.New("self-signed certificate"), err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
