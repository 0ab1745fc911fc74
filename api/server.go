// Package api serves agentca's HTTP API: the HTTPS listener for agents
// (sign, renew, roots, bundle), the plain HTTP listener for relying
// services (health, metrics), and the admin API on the unix socket.
//
// Handlers translate between HTTP and the domain: they decode and bound
// the request, ask a provisioner for an identity, hand the decision to the
// ca.Authority, and map domain errors to status codes. Every issuance and
// every refusal is one audit log line and one metric sample.
package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
)

// Provisioner is a configured provisioner: the verifier with the limits
// the CA applies to what it vouches for.
type Provisioner struct {
	Name       string
	Type       string
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	// Template renders the SPIFFE ID and DNS names from the attested
	// claims when the provisioner does not name the identity itself (join
	// tokens do).
	Template *provisioners.Template
	provisioners.Provisioner
}

// identity verifies the attestation and settles the identity it grants.
func (p *Provisioner) identity(ctx context.Context, trustDomain, token string) (*provisioners.Identity, error) {
	id, err := p.Attest(ctx, token)
	if err != nil {
		return nil, err
	}
	if id.SPIFFEID == "" && p.Template != nil {
		if id.SPIFFEID, id.DNSNames, err = p.Template.Render(trustDomain, id.Claims); err != nil {
			return nil, fmt.Errorf("%w: %v", ca.ErrIdentity, err)
		}
	}
	return id, nil
}

// Options configure a Server.
type Options struct {
	Authority *ca.Authority
	// Store reads the certificate records. Required.
	Store CertReader
	// Revoker records revocations and task ends for the revocation
	// service api builds when Revocation is nil; nil means Store, which
	// must then implement it.
	Revoker Revoker
	// ReplayKeys serves the admin's replay key reset; nil means Store,
	// which must then implement it.
	ReplayKeys ReplayKeys
	// Trust is the published trust material, read at each request (a
	// *Trust is its own fixed source; the daemon's anchor runtime
	// follows the stored anchors). Required.
	Trust TrustSource
	// Provisioners by name. Required, at least one.
	Provisioners map[string]*Provisioner
	// Logger receives the audit lines. Nil discards.
	Logger *slog.Logger
	// Registry collects metrics and serves /metrics. Nil means a new
	// registry.
	Registry *prometheus.Registry
	// Now nil means time.Now.
	Now func() time.Time
	// OCSP answers /ocsp; nil serves no OCSP.
	OCSP *ocsp.Responder
	// CRLs serves /crl; nil serves no CRL.
	CRLs CRLs
	// Revocation makes every revocation (revoke, task end, a reused
	// renewal, a node's workload SVIDs): it writes the store, tells the
	// OCSP and CRL caches and writes the audit lines. Nil means one over
	// Store and Workloads that tells only ClientCerts.
	Revocation *revocation.Service
	// ClientCerts caches the records of client certificates
	// (certcache.go); Revocation's notifier (or, when Revocation is nil,
	// the one api builds) must tell it of every revocation, and no
	// other writer of Store may revoke. Nil: every check reads Store.
	ClientCerts *ClientCerts
	// Admins are SPIFFE IDs allowed to revoke any certificate over mTLS.
	Admins []string
	// Log is the issuance log: with it, every SignResponse carries the
	// certificate's inclusion proof, and the HTTP listener serves the CT
	// v1 API (ct.go), reading the stored log through LogReader
	// (required with Log). Nil serves neither.
	Log       LogSigner
	LogReader LogReader
	// Anchors runs trust-anchor rotation for the admin API; nil answers
	// its endpoints with 404.
	Anchors AnchorAdmin
	// Tokens configure the OAuth 2.0 token endpoint (/v1/token) and its
	// JWKS and metadata (token.go); nil serves none of them.
	Tokens *TokenOptions
	// JWTSVID configures POST /v1/jwt-svid, its keys and OIDC discovery
	// (jwtsvid.go); nil serves none of them.
	JWTSVID *JWTSVIDOptions
	// Ready, when set, says why this process cannot serve what needs its
	// store now (GET /ready: a replica cut off from etcd's quorum); nil
	// means it always can.
	Ready func() error
	// Workloads keeps the workload definitions (workload.go); nil serves
	// neither their admin API nor the node agent endpoints.
	Workloads WorkloadStore
	// Federation holds the federated trust domains' bundles, served at
	// /v1/bundle?trust_domain=… (federation.go); nil: none.
	Federation spiffebundle.Source
}

// Server holds the handlers' state.
type Server struct {
	ca      *ca.Authority
	store   storeRoles
	trust   trustRef
	provs   atomic.Pointer[map[string]*Provisioner]
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *Metrics
	ops     *opMetrics
	now     func() time.Time

	ocsp    *ocsp.Responder
	crls    CRLs
	rev     *revocation.Service
	admins  atomic.Pointer[[]string]
	tlog    LogSigner
	anchors AnchorAdmin
	tokens  *tokenIssuer
	jwt     *jwtSVIDIssuer
	exch    *exchanger
	ready   func() error

	clientCerts *ClientCerts // nil: every check reads the store

	workloads WorkloadStore
	tlogStore LogReader // the stored log the CT endpoints read
	federated spiffebundle.Source
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Authority == nil || opts.Store == nil || opts.Trust == nil || len(opts.Provisioners) == 0 {
		return nil, errors.New("api: Authority, Store, Trust and Provisioners are required")
	}
	if opts.Log != nil && opts.LogReader == nil {
		return nil, errors.New("api: the issuance log (Log) needs its LogReader")
	}
	roles, err := rolesOf(opts)
	if err != nil {
		return nil, err
	}
	s := &Server{ca: opts.Authority, store: roles, log: opts.Logger, reg: opts.Registry, now: opts.Now,
		ocsp: opts.OCSP, crls: opts.CRLs, rev: opts.Revocation, tlog: opts.Log, tlogStore: opts.LogReader,
		anchors: opts.Anchors, ready: opts.Ready, workloads: opts.Workloads, federated: opts.Federation,
		clientCerts: opts.ClientCerts}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.metrics = NewMetrics(s.reg)
	s.ops = newOpMetrics(s.reg, s)
	if s.clientCerts != nil {
		s.clientCerts.register(s.reg)
	}
	if s.rev == nil {
		rev, err := s.defaultRevocation(opts)
		if err != nil {
			return nil, err
		}
		s.rev = rev
	}
	if opts.Tokens != nil {
		t, err := newTokenIssuer(*opts.Tokens)
		if err != nil {
			return nil, err
		}
		s.tokens = t
	}
	if opts.JWTSVID != nil {
		j, err := newJWTSVIDIssuer(*opts.JWTSVID)
		if err != nil {
			return nil, err
		}
		s.jwt = j
	}
	if opts.Tokens != nil && opts.Tokens.Exchange != nil {
		x, err := newExchanger(*opts.Tokens.Exchange)
		if err != nil {
			return nil, err
		}
		s.exch = x
	}
	s.SetAdmins(opts.Admins)
	s.trust.set(opts.Trust)
	s.SetProvisioners(opts.Provisioners)
	return s, nil
}

// SetProvisioners swaps the provisioner set; requests in flight finish
// with the one they started with.
func (s *Server) SetProvisioners(p map[string]*Provisioner) { s.provs.Store(&p) }

// SetAdmins swaps the admin SPIFFE IDs: a request that starts after the
// swap is judged by the new list (a removed admin loses its rights at
// once).
func (s *Server) SetAdmins(ids []string) {
	ids = slices.Clone(ids)
	s.admins.Store(&ids)
}

// isAdmin reports whether id is one of the configured admins.
func (s *Server) isAdmin(id string) bool { return slices.Contains(*s.admins.Load(), id) }

// SetTrust swaps the published trust material for t.
func (s *Server) SetTrust(t *Trust) { s.trust.set(t) }

// Trust returns the published trust material.
func (s *Server) Trust() *Trust { return s.trust.Load() }

// HTTPSHandler serves the agent API on the TLS listener.
func (s *Server) HTTPSHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", allow(http.MethodGet, s.health))
	mux.HandleFunc("/ready", allow(http.MethodGet, s.readiness))
	mux.HandleFunc("/v1/roots", allow(http.MethodGet, s.roots))
	mux.HandleFunc("/v1/bundle", allow(http.MethodGet, s.bundle))
	mux.HandleFunc("/v1/challenge", allow(http.MethodPost, s.challenge))
	mux.HandleFunc("/v1/sign", allow(http.MethodPost, s.sign))
	mux.HandleFunc("/v1/renew", allow(http.MethodPost, s.renew))
	mux.HandleFunc("/v1/revoke", allow(http.MethodPost, s.selfRevoke))
	mux.HandleFunc("/v1/workload/sign", allow(http.MethodPost, s.workloadSign))
	mux.HandleFunc("/v1/workload/definitions", allow(http.MethodGet, s.workloadDefinitions))
	if s.tokens != nil {
		mux.HandleFunc("/v1/token", s.token)
		mux.HandleFunc(TaskStatusPath, allow(http.MethodGet, s.taskStatus))
		mux.HandleFunc("/.well-known/jwks.json", allow(http.MethodGet, s.jwksHandler))
		mux.HandleFunc("/.well-known/oauth-authorization-server", allow(http.MethodGet, s.oauthMetadata))
	}
	if s.jwt != nil {
		mux.HandleFunc("/v1/jwt-svid", allow(http.MethodPost, s.jwtSVID))
		mux.HandleFunc(JWTKeysPath, allow(http.MethodGet, s.jwtKeysHandler))
		mux.HandleFunc("/.well-known/openid-configuration", allow(http.MethodGet, s.openIDConfiguration))
	}
	mux.Handle("/admin/", s.adminOverTLS(s.adminMux()))
	if s.tlog != nil {
		mux.HandleFunc("/v1/log-key", allow(http.MethodGet, s.logKey))
	}
	mux.HandleFunc("/", notFound)
	return s.countRefusals(recoverer(s.log, mux))
}

// HTTPHandler serves the plain HTTP listener.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", allow(http.MethodGet, s.health))
	mux.HandleFunc("/ready", allow(http.MethodGet, s.readiness))
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	if s.crls != nil {
		mux.HandleFunc("/crl", allow(http.MethodGet, s.crlHandler))
		mux.HandleFunc("/crl/", allow(http.MethodGet, s.crlHandler))
	}
	mux.HandleFunc("/ca/", allow(http.MethodGet, s.issuerCert))
	if s.tlog != nil {
		s.routeLog(mux)
	}
	mux.HandleFunc("/", notFound)
	h := s.countRefusals(recoverer(s.log, mux))
	if s.ocsp == nil {
		return h
	}
	ocspH := s.countRefusals(recoverer(s.log, http.HandlerFunc(s.ocspHandler)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/ocsp" || strings.HasPrefix(p, "/ocsp/") {
			ocspH.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, wire.Health{Status: "ok"})
}

// readiness is GET /ready, for load balancers: /health's answer while
// the store can be used, 503 unavailable while it cannot.
func (s *Server) readiness(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		if err := s.ready(); err != nil {
			writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "%s", err))
			return
		}
	}
	s.health(w, r)
}

func (s *Server) roots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/pem-certificate-chain")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(s.trust.Load().RootsPEM)
}

func (s *Server) bundle(w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" {
		s.federatedBundle(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(s.trust.Load().Bundle)
}

// ParseTTL reads the optional ttl field.
func ParseTTL(s string) (time.Duration, *Error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errorf(http.StatusBadRequest, CodeBadTTL, "ttl %s is not a positive Go duration such as \"5m\"", echo(s))
	}
	return d, nil
}

// maxReason bounds the reason in an audit line.
const maxReason = 512

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// DecodeSignRequest reads and checks a /v1/sign body without touching any
// state: the JSON shape, the CSR (parsed, key type, signature) and the TTL.
func DecodeSignRequest(w http.ResponseWriter, r *http.Request) (*wire.SignRequest, *x509.CertificateRequest, time.Duration, *Error) {
	var req wire.SignRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return nil, nil, 0, e
	}
	if req.Provisioner == "" || req.Token == "" || req.CSR == "" {
		return &req, nil, 0, errorf(http.StatusBadRequest, CodeBadRequest, "provisioner, token and csr are required")
	}
	csr, err := ca.ParseCSR([]byte(req.CSR))
	if err != nil {
		return &req, nil, 0, csrError(err)
	}
	ttl, e := ParseTTL(req.TTL)
	if e != nil {
		return &req, nil, 0, e
	}
	if req.Task != "" && !ValidTask(req.Task) {
		return &req, nil, 0, errorf(http.StatusBadRequest, CodeBadRequest, "task must be 1-128 letters, digits, '.', '_', ':', '/' or '-', starting with a letter or digit")
	}
	return &req, csr, ttl, nil
}

func csrError(err error) *Error {
	if errors.Is(err, ca.ErrKeyType) {
		return errorf(http.StatusBadRequest, CodeBadKey, "%s", trimPrefix(err))
	}
	return errorf(http.StatusBadRequest, CodeBadCSR, "%s", trimPrefix(err))
}

// trimPrefix drops the "ca: " package prefix from messages shown to
// callers.
func trimPrefix(err error) string {
	s := err.Error()
	for _, p := range []string{"ca: ", "store: "} {
		if len(s) > len(p) && s[:len(p)] == p {
			s = s[len(p):]
		}
	}
	return s
}

func (s *Server) sign(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	req, csr, ttl, e := DecodeSignRequest(w, r)
	provName := "unknown"
	var prov *Provisioner
	if req != nil {
		prov = (*s.provs.Load())[req.Provisioner]
		if prov != nil {
			provName = prov.Name
		}
	}
	if e == nil && prov == nil {
		e = errorf(http.StatusBadRequest, CodeUnknownProvisioner, "no provisioner named %s", fingerprint(req.Provisioner))
	}
	a := auditEntry{op: "sign", prov: provName}
	if e == nil {
		id, err := prov.identity(r.Context(), s.ca.TrustDomain(), req.Token)
		if err != nil {
			e = s.refusal(err)
			a.detail = err
		} else {
			a.spiffeID = id.SPIFFEID
			creq := &ca.Request{
				PublicKey: csr.PublicKey, SPIFFEID: id.SPIFFEID, DNSNames: id.DNSNames,
				Provisioner: prov.Name, TTL: ttl, DefaultTTL: prov.DefaultTTL, MaxTTL: prov.MaxTTL,
				JoinToken: id.JoinToken, Once: id.Once, Task: req.Task, Claims: id.Claims,
			}
			if a.issued, e, err = s.issue(r, "sign", creq); e == nil && err != nil {
				e = s.refusal(err)
			}
			a.detail = err
		}
	}
	a.e = e
	s.finish(w, r, start, a)
}

// finish settles the response (a certificate is answered only with its
// log receipt: a receipt failure turns it into an error), then writes the
// audit line and the metric from the same outcome, then the response.
func (s *Server) finish(w http.ResponseWriter, r *http.Request, start time.Time, a auditEntry) {
	var resp *wire.SignResponse
	if a.e == nil {
		resp = signResponse(a.issued)
		resp.Log, a.e = s.logReceipt(r.Context(), a.issued)
	}
	s.audit(r, a)
	outcome := "issued"
	switch {
	case a.e != nil:
		outcome = a.e.Code
		writeError(w, a.e)
	case a.issued.Existing:
		// A retry: the certificate it already obtained.
		outcome = "retried"
		writeJSON(w, http.StatusOK, resp)
	default:
		writeJSON(w, http.StatusCreated, resp)
	}
	s.metrics.observe(a.prov, a.op, outcome, time.Since(start).Seconds())
}

func signResponse(c *ca.Issued) *wire.SignResponse {
	return &wire.SignResponse{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})),
		Chain:       c.Issuer.ChainPEM(),
		Serial:      c.Serial,
		SPIFFEID:    c.SPIFFEID,
		NotBefore:   c.NotBefore,
		NotAfter:    c.NotAfter,
	}
}

// refusal maps a domain error to the HTTP error shown to the caller.
// Attestation failures all get one generic message: the reason goes to the
// audit log, not to the caller.
func (s *Server) refusal(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, provisioners.ErrUnauthorized), errors.Is(err, store.ErrTokenInvalid), errors.Is(err, store.ErrReplay):
		return errorf(http.StatusUnauthorized, CodeUnauthorized, "the attestation was not accepted")
	case errors.Is(err, store.ErrAlreadyIssued):
		// A retry whose certificate cannot be given back (made by an
		// issuing CA since replaced): the attestation is spent.
		return errorf(http.StatusUnauthorized, CodeUnauthorized, "the attestation was not accepted")
	case errors.Is(err, store.ErrRenewalReused):
		return errorf(http.StatusForbidden, CodeRenewalReused, "this certificate was already renewed onto another key; its lineage is revoked")
	case errors.Is(err, store.ErrRevoked):
		return errorf(http.StatusForbidden, CodeCertificateRevoked, "the client certificate is revoked")
	case errors.Is(err, store.ErrTaskEnded):
		return errorf(http.StatusForbidden, CodeTaskEnded, "the task this certificate names has been ended; no certificate can be issued for it")
	case errors.Is(err, ca.ErrTTL):
		return errorf(http.StatusBadRequest, CodeBadTTL, "%s", trimPrefix(err))
	case errors.Is(err, ca.ErrKeyType):
		return errorf(http.StatusBadRequest, CodeBadKey, "%s", trimPrefix(err))
	case errors.Is(err, ca.ErrIdentity):
		return errorf(http.StatusForbidden, CodeIdentityNotAllowed, "%s", trimPrefix(err))
	case errors.Is(err, ca.ErrNoIssuer):
		s.log.Error("cannot issue", "err", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA cannot issue: its active issuing CA's key is not available")
	case errors.Is(err, ca.ErrIssuerExpired):
		s.log.Error("cannot issue", "err", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA cannot issue: its issuing CA has expired")
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA is shutting down or overloaded; retry")
	case errors.Is(err, store.ErrDamaged):
		s.log.Error("the store is damaged", "err", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA's store cannot be read; the CA's log has details")
	}
	s.log.Error("internal error", "err", err)
	return errorf(http.StatusInternalServerError, CodeInternal, "internal error; the CA's log has details")
}

// auditEntry is one issuance or refusal.
type auditEntry struct {
	op, prov    string
	spiffeID    string // the identity asked for, when known
	renewedFrom string
	parent      string // the node of a workload SVID
	issued      *ca.Issued
	e           *Error
	// detail is the internal reason of a refusal; it never contains a
	// token or a key.
	detail error
}

// audit writes the one log line per issuance or refusal.
func (s *Server) audit(r *http.Request, a auditEntry) {
	attrs := []any{"op", a.op, "provisioner", a.prov, "remote", r.RemoteAddr}
	if a.renewedFrom != "" {
		attrs = append(attrs, "renewed_from", a.renewedFrom)
	}
	if a.parent != "" {
		attrs = append(attrs, "parent", a.parent)
	}
	if a.e == nil {
		outcome := "issued"
		if a.issued.Existing {
			outcome = "retried"
		}
		attrs = append(attrs, "outcome", outcome, "serial", a.issued.Serial, "spiffe_id", a.issued.SPIFFEID,
			"not_after", a.issued.NotAfter.Format(time.RFC3339), "issuer", a.issued.Issuer.SKI)
		s.log.Info("audit", attrs...)
		return
	}
	if a.spiffeID != "" {
		attrs = append(attrs, "spiffe_id", a.spiffeID)
	}
	attrs = append(attrs, "outcome", "refused", "error", a.e.Code)
	if a.detail != nil {
		// A provisioner's reason may quote what the caller sent.
		attrs = append(attrs, "reason", truncate(a.detail.Error(), maxReason))
	} else {
		attrs = append(attrs, "reason", a.e.Message)
	}
	s.log.Warn("audit", attrs...)
}
