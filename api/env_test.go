package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/wire"
	"github.com/prometheus/client_golang/prometheus"
)

const testTD = "example.org"

// clock is a settable clock shared by the authority, the provisioners and
// the API of one test environment.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// lockedBuffer collects log output written from server goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	sharedHierarchyOnce sync.Once
	sharedHierarchy     *ca.Hierarchy
	sharedHierarchyErr  error
)

// testHierarchy returns one P-256 hierarchy shared by the tests of a run.
func testHierarchy(t testing.TB) *ca.Hierarchy {
	t.Helper()
	sharedHierarchyOnce.Do(func() {
		sharedHierarchy, sharedHierarchyErr = ca.NewHierarchy("agentca-api-test", ca.ECP256, time.Now())
	})
	if sharedHierarchyErr != nil {
		t.Fatal(sharedHierarchyErr)
	}
	return sharedHierarchy
}

// envOptions vary a test environment; the zero value is a working CA with
// one join-token provisioner "join" (default TTL 5m, max 1h).
type envOptions struct {
	hierarchy *ca.Hierarchy // nil: the shared one
	storePath string        // "": a new file
	rand      io.Reader     // the authority's Rand
	extra     []string      // names of further join-token provisioners
	start     time.Time     // the clock's start; zero: now
	admins    []string      // SPIFFE IDs allowed the admin API over HTTPS
	// clientCerts, when set, is the client certificate cache the server
	// and its revocation service use; nil: the one api builds.
	clientCerts *api.ClientCerts
}

// env is a running CA: a bolt store, an authority, a join-token
// provisioner, the API server with its HTTPS handler on an httptest TLS
// server that requests client certificates, and its HTTP and admin
// handlers on plain httptest servers.
type env struct {
	t         *testing.T
	h         *ca.Hierarchy
	storePath string
	store     *bolt.Store
	authority *ca.Authority
	join      *jointoken.Provisioner
	provs     map[string]*api.Provisioner
	srv       *api.Server
	ts        *httptest.Server // HTTPS API
	plain     *httptest.Server // HTTP listener (metrics)
	admin     *httptest.Server // admin API
	clock     *clock
	logs      *lockedBuffer
	// lastToken is the join token validSign last put in a body.
	lastToken string
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, h: o.hierarchy, storePath: o.storePath, clock: &clock{}, logs: &lockedBuffer{}}
	if e.h == nil {
		e.h = testHierarchy(t)
	}
	if e.storePath == "" {
		e.storePath = filepath.Join(t.TempDir(), "agentca.db")
	}
	start := o.start
	if start.IsZero() {
		start = time.Now()
	}
	e.clock.Set(start)
	st, err := bolt.Open(e.storePath, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.store = st
	t.Cleanup(func() { st.Close() })
	iss, err := ca.NewIssuer(e.h.Issuing, e.h.IssuingKey, e.h.Root)
	if err != nil {
		t.Fatal(err)
	}
	e.authority, err = ca.New(ca.Options{TrustDomain: testTD, Issuer: iss, Recorder: st, Now: e.clock.Now, Rand: o.rand})
	if err != nil {
		t.Fatal(err)
	}
	e.join, err = jointoken.New("join", st, 15*time.Minute, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	e.provs = map[string]*api.Provisioner{
		"join": {Name: "join", Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: e.join},
	}
	for _, name := range o.extra {
		p, err := jointoken.New(name, st, 15*time.Minute, e.clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		e.provs[name] = &api.Provisioner{Name: name, Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: p}
	}
	trust, err := api.NewTrust(testTD, []*x509.Certificate{e.h.Root}, 7, 2*time.Minute, e.authority.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = api.New(api.Options{Authority: e.authority, Store: st, Trust: trust, Provisioners: e.provs,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Registry: prometheus.NewRegistry(), Now: e.clock.Now, Workloads: st, Admins: o.admins,
		ClientCerts: o.clientCerts})
	if err != nil {
		t.Fatal(err)
	}
	e.ts = httptest.NewUnstartedServer(e.srv.HTTPSHandler())
	e.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	e.ts.StartTLS()
	t.Cleanup(e.ts.Close)
	e.plain = httptest.NewServer(e.srv.HTTPHandler())
	t.Cleanup(e.plain.Close)
	e.admin = httptest.NewServer(e.srv.AdminHandler())
	t.Cleanup(e.admin.Close)
	return e
}

// client returns an HTTPS client that trusts the test server and presents
// cert, when not nil, as its client certificate.
func (e *env) client(cert *tls.Certificate) *http.Client {
	tr := e.ts.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// response is a read HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, c *http.Client, method, url, contentType string, body io.Reader) *response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

// postJSON posts v (marshalled unless it is already []byte) to the HTTPS
// API with client c.
func (e *env) postJSON(c *http.Client, path string, v any) *response {
	e.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	return do(e.t, c, http.MethodPost, e.ts.URL+path, "application/json", bytes.NewReader(b))
}

// apiError decodes an error body strictly and checks the status.
func apiError(t *testing.T, r *response, status int, code string) wire.Error {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var e wire.Error
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q is not {\"error\",\"message\"}: %v", r.body, err)
	}
	if e.Code != code || e.Message == "" {
		t.Fatalf("error = %q %q, want code %q and a message", e.Code, e.Message, code)
	}
	return e
}

func mustKey(t testing.TB, kt ca.KeyType) crypto.Signer {
	t.Helper()
	k, err := ca.GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// token creates one join token for id.
func (e *env) token(id string) string {
	e.t.Helper()
	c, err := e.join.Create(context.Background(), id, 0, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	return c[0].Token
}

// enrolled is a certificate obtained through /v1/sign.
type enrolled struct {
	key  crypto.Signer
	resp wire.SignResponse
	leaf *x509.Certificate
	tls  *tls.Certificate
}

// enroll signs a new P-256 key through /v1/sign for id.
func (e *env) enroll(id string, ttl string) *enrolled {
	e.t.Helper()
	key := mustKey(e.t, ca.ECP256)
	r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(id), CSR: csrFor(e.t, key, nil), TTL: ttl})
	if r.status != http.StatusCreated {
		e.t.Fatalf("sign: %d %s", r.status, r.body)
	}
	return enrolledFrom(e.t, key, r)
}

func enrolledFrom(t *testing.T, key crypto.Signer, r *response) *enrolled {
	t.Helper()
	out := &enrolled{key: key}
	if err := json.Unmarshal(r.body, &out.resp); err != nil {
		t.Fatalf("SignResponse %s: %v", r.body, err)
	}
	out.leaf = parsePEMCert(t, out.resp.Certificate)
	chain := [][]byte{out.leaf.Raw}
	for _, p := range out.resp.Chain {
		chain = append(chain, parsePEMCert(t, p).Raw)
	}
	out.tls = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: out.leaf}
	return out
}

func parsePEMCert(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", s)
	}
	if strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("more than one PEM block in %q", s)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// boltCA is the test hierarchy as a running CA over a fresh bbolt file:
// the store (closed when the test ends), the issuing CA, the Authority
// and the published trust.
type boltCA struct {
	h         *ca.Hierarchy
	st        *bolt.Store
	iss       *ca.Issuer
	authority *ca.Authority
	trust     *api.Trust
}

func newBoltCA(tb testing.TB) *boltCA {
	tb.Helper()
	c := &boltCA{h: testHierarchy(tb)}
	var err error
	if c.st, err = bolt.Open(filepath.Join(tb.TempDir(), "agentca.db"), bolt.Options{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.st.Close() })
	if c.iss, err = ca.NewIssuer(c.h.Issuing, c.h.IssuingKey, c.h.Root); err != nil {
		tb.Fatal(err)
	}
	if c.authority, err = ca.New(ca.Options{TrustDomain: testTD, Issuer: c.iss, Recorder: c.st}); err != nil {
		tb.Fatal(err)
	}
	if c.trust, err = api.NewTrust(testTD, []*x509.Certificate{c.h.Root}, 1, time.Minute, c.iss); err != nil {
		tb.Fatal(err)
	}
	return c
}
