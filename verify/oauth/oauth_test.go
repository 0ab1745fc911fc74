package oauth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/verify/oauth"
	"github.com/go-jose/go-jose/v4"
)

const (
	audience = "https://tools.example.org"
	idA      = "spiffe://example.org/agent/a"
	idB      = "spiffe://example.org/agent/b"
)

// world is a CA hierarchy, two agent certificates, a token key published
// by an https server, and a middleware in front of a handler that echoes
// the caller's SPIFFE ID.
type world struct {
	t        testing.TB
	h        *ca.Hierarchy
	a, b     *x509.Certificate
	key      *ecdsa.PrivateKey
	kid      string
	issuer   string
	fetches  atomic.Int32
	failJWKS atomic.Bool
	handler  http.Handler
	mw       *oauth.Middleware
	hc       *http.Client
	// now is the test's time; clock the middleware's (it reads it from
	// its background fetches too): set both with setNow.
	now      time.Time
	clock    atomic.Int64
	jwksKeys func() []jose.JSONWebKey
	// ended are the tasks the CA's task status endpoint says have ended;
	// taskFetches counts its requests.
	ended       sync.Map
	taskFetches atomic.Int32
}

func (w *world) setNow(t time.Time) {
	w.now = t
	w.clock.Store(t.UnixNano())
}

func (w *world) clockNow() time.Time { return time.Unix(0, w.clock.Load()) }

func newWorld(t testing.TB) *world {
	t.Helper()
	h, err := ca.NewHierarchy("oauth-test", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, h: h}
	w.setNow(time.Now())
	w.a, w.b = w.leaf(idA), w.leaf(idB)
	w.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.kid = "k1"
	w.jwksKeys = func() []jose.JSONWebKey {
		return []jose.JSONWebKey{{Key: &w.key.PublicKey, KeyID: w.kid, Algorithm: "ES256", Use: "sig"}}
	}
	ts := httptest.NewTLSServer(nil)
	t.Cleanup(ts.Close)
	w.issuer = ts.URL
	w.hc = ts.Client()
	ts.Config.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(rw).Encode(map[string]string{"issuer": ts.URL, "jwks_uri": ts.URL + "/jwks"})
		case "/jwks":
			w.fetches.Add(1)
			if w.failJWKS.Load() {
				http.Error(rw, "down", http.StatusServiceUnavailable)
				return
			}
			_ = json.NewEncoder(rw).Encode(jose.JSONWebKeySet{Keys: w.jwksKeys()})
		case "/v1/task-status":
			w.taskFetches.Add(1)
			task := r.URL.Query().Get("task")
			_, ended := w.ended.Load(task)
			_ = json.NewEncoder(rw).Encode(map[string]any{"task": task, "ended": ended})
		default:
			http.NotFound(rw, r)
		}
	})
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: []*x509.Certificate{h.Root}, DisableRevocation: true,
		Now: w.clockNow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	m, err := oauth.New(oauth.Options{Verifier: v, Issuer: ts.URL, Audience: audience, Scopes: []string{"tools.read"},
		HTTPClient: ts.Client(), Leeway: -1, Now: w.clockNow})
	if err != nil {
		t.Fatal(err)
	}
	w.mw = m
	w.handler = m.Wrap(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := oauth.FromContext(r.Context())
		_, _ = rw.Write([]byte(c.SPIFFEID + " " + c.Task))
	}))
	return w
}

func (w *world) leaf(id string) *x509.Certificate {
	w.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, w.h.Issuing, key.Public(), w.h.IssuingKey)
	if err != nil {
		w.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func x5t(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// claims are a valid token's claims for cert, to be edited.
func (w *world) claims(cert *x509.Certificate) map[string]any {
	id := cert.URIs[0].String()
	return map[string]any{"iss": w.issuer, "sub": id, "client_id": id, "aud": audience, "scope": "tools.read tools.write",
		"iat": w.now.Unix(), "exp": w.now.Add(5 * time.Minute).Unix(), "jti": "j1", "cnf": map[string]string{"x5t#S256": x5t(cert)}, "task": "t-1"}
}

func (w *world) sign(claims map[string]any, key crypto.Signer, typ, kid string) string {
	w.t.Helper()
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		w.t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func (w *world) do(cert *x509.Certificate, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "https://tools.example.org/run", nil)
	if cert != nil {
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert, w.h.Issuing}}
	}
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	w.handler.ServeHTTP(rec, r)
	return rec
}

func TestMiddleware(t *testing.T) {
	w := newWorld(t)
	good := w.sign(w.claims(w.a), w.key, "at+jwt", w.kid)
	edit := func(f func(map[string]any)) string {
		c := w.claims(w.a)
		f(c)
		return w.sign(c, w.key, "at+jwt", w.kid)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// renewed has a's SPIFFE ID (a renewal, or another instance of the
	// same workload): the sub check passes, only cnf can refuse.
	renewed := w.leaf(idA)
	tests := []struct {
		name   string
		cert   *x509.Certificate
		auth   string
		status int
		code   string
	}{
		{"bound certificate", w.a, "Bearer " + good, 200, ""},
		{"scheme is case-insensitive", w.a, "bearer " + good, 200, ""},
		{"stolen token on another certificate", w.b, "Bearer " + good, 401, "invalid_token"},
		{"token on another certificate of the same SPIFFE ID", renewed, "Bearer " + good, 401, "invalid_token"},
		{"cnf of another certificate of the same SPIFFE ID", w.a, "Bearer " + edit(func(c map[string]any) {
			c["cnf"] = map[string]string{"x5t#S256": x5t(renewed)}
		}), 401, "invalid_token"},
		{"no token", w.a, "", 401, ""},
		{"basic auth", w.a, "Basic Zm9vOmJhcg==", 401, ""},
		{"no client certificate", nil, "Bearer " + good, 401, "invalid_token"},
		{"garbage", w.a, "Bearer not.a.jwt", 401, "invalid_token"},
		{"expired", w.a, "Bearer " + edit(func(c map[string]any) { c["exp"] = w.now.Add(-time.Second).Unix() }), 401, "invalid_token"},
		{"future iat", w.a, "Bearer " + edit(func(c map[string]any) { c["iat"] = w.now.Add(time.Minute).Unix() }), 401, "invalid_token"},
		{"not yet valid", w.a, "Bearer " + edit(func(c map[string]any) { c["nbf"] = w.now.Add(time.Minute).Unix() }), 401, "invalid_token"},
		{"wrong audience", w.a, "Bearer " + edit(func(c map[string]any) { c["aud"] = "https://other.example.org" }), 401, "invalid_token"},
		{"audience in a list", w.a, "Bearer " + edit(func(c map[string]any) { c["aud"] = []string{"https://x", audience} }), 200, ""},
		{"wrong issuer", w.a, "Bearer " + edit(func(c map[string]any) { c["iss"] = "https://evil.example" }), 401, "invalid_token"},
		{"subject is not the certificate's", w.a, "Bearer " + edit(func(c map[string]any) { c["sub"] = idB }), 401, "invalid_token"},
		{"no cnf", w.a, "Bearer " + edit(func(c map[string]any) { delete(c, "cnf") }), 401, "invalid_token"},
		{"no exp", w.a, "Bearer " + edit(func(c map[string]any) { delete(c, "exp") }), 401, "invalid_token"},
		{"missing scope", w.a, "Bearer " + edit(func(c map[string]any) { c["scope"] = "tools.write" }), 403, "insufficient_scope"},
		{"not an access token", w.a, "Bearer " + w.sign(w.claims(w.a), w.key, "JWT", w.kid), 401, "invalid_token"},
		{"signed by another key", w.a, "Bearer " + w.sign(w.claims(w.a), other, "at+jwt", w.kid), 401, "invalid_token"},
		{"unknown key", w.a, "Bearer " + w.sign(w.claims(w.a), other, "at+jwt", "k2"), 401, "invalid_token"},
		{"alg none", w.a, "Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + ".", 401, "invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := w.do(tc.cert, tc.auth)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status == 200 {
				if got := rec.Body.String(); got != idA+" t-1" {
					t.Errorf("handler saw %q", got)
				}
				return
			}
			ch := rec.Header().Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, "Bearer ") {
				t.Fatalf("WWW-Authenticate = %q", ch)
			}
			if tc.code != "" && !strings.Contains(ch, `error="`+tc.code+`"`) {
				t.Errorf("WWW-Authenticate = %q, want error %s", ch, tc.code)
			}
			if tc.code == "" && strings.Contains(ch, "error=") {
				t.Errorf("a request without a token gets a bare challenge, not %q", ch)
			}
			if tc.code == "insufficient_scope" && !strings.Contains(ch, `scope="tools.read"`) {
				t.Errorf("WWW-Authenticate = %q, want the required scope", ch)
			}
		})
	}
}

func TestKeyRotationFetchesOnce(t *testing.T) {
	w := newWorld(t)
	if rec := w.do(w.a, "Bearer "+w.sign(w.claims(w.a), w.key, "at+jwt", w.kid)); rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	// The CA rotates its token key: the unknown kid fetches the JWKS
	// again (at most every 10 s), once, then the new key verifies.
	w.setNow(w.now.Add(11 * time.Second))
	w.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.kid = "k2"
	before := w.fetches.Load()
	for range 5 {
		if rec := w.do(w.a, "Bearer "+w.sign(w.claims(w.a), w.key, "at+jwt", w.kid)); rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	if n := w.fetches.Load() - before; n != 1 {
		t.Errorf("%d JWKS fetches for a new key, want 1", n)
	}
	// Unknown kids do not make every request fetch.
	before = w.fetches.Load()
	for range 5 {
		w.do(w.a, "Bearer "+w.sign(w.claims(w.a), w.key, "at+jwt", "nope"))
	}
	if n := w.fetches.Load() - before; n > 1 {
		t.Errorf("%d JWKS fetches for unknown kids within 10s, want at most 1", n)
	}
}

// burst sends n requests at once and returns their statuses.
func (w *world) burst(n int, cert *x509.Certificate, auth string) map[int]int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[int]int{}
	for range n {
		wg.Go(func() {
			rec := w.do(cert, auth)
			mu.Lock()
			out[rec.Code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// waitFetches waits until the JWKS server has been asked n times and the
// fetch has settled.
func (w *world) waitFetches(n int32) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.fetches.Load() < n {
		if time.Now().After(deadline) {
			w.t.Fatalf("%d JWKS fetches, waited for %d", w.fetches.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the failure's backoff is recorded
}

// TestJWKSOutage: with the CA's JWKS failing, stale keys keep working
// without every request fetching (one background fetch, then backoff),
// until MaxStaleness, then 503s; a recovered JWKS is fetched again.
func TestJWKSOutage(t *testing.T) {
	w := newWorld(t)
	tok := func() string { return "Bearer " + w.sign(w.claims(w.a), w.key, "at+jwt", w.kid) }
	if rec := w.do(w.a, tok()); rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if n := w.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	w.failJWKS.Store(true)
	w.setNow(w.now.Add(oauth.DefaultRefreshInterval + time.Second))
	if got := w.burst(20, w.a, tok()); got[200] != 20 {
		t.Fatalf("stale keys: statuses %v, want 20 × 200", got)
	}
	w.waitFetches(2)
	for range 20 {
		if rec := w.do(w.a, tok()); rec.Code != 200 {
			t.Fatalf("stale keys after a failed fetch: %d %s", rec.Code, rec.Body)
		}
	}
	if n := w.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches for 40 requests with stale keys and a failing JWKS, want 2 (one background fetch)", n)
	}
	// The backoff (1 s) over, one more background fetch.
	w.setNow(w.now.Add(1500 * time.Millisecond))
	w.burst(20, w.a, tok())
	w.waitFetches(3)
	w.burst(20, w.a, tok())
	if n := w.fetches.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3 (backoff after the second failure)", n)
	}
	// Beyond MaxStaleness the keys are not trusted: 503, no challenge.
	w.setNow(w.now.Add(oauth.DefaultMaxStaleness))
	rec := w.do(w.a, tok())
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("WWW-Authenticate") != "" ||
		!strings.Contains(rec.Body.String(), `"temporarily_unavailable"`) {
		t.Fatalf("keys beyond MaxStaleness: %d %q %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	// The JWKS is back: the background fetch restores service.
	w.failJWKS.Store(false)
	w.setNow(w.now.Add(2 * time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for w.do(w.a, tok()).Code != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the recovered JWKS was never fetched again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJWKSNeverFetchedNoStampede: requests arriving before any key was
// fetched share one fetch; after it fails they get 503 at once.
func TestJWKSNeverFetchedNoStampede(t *testing.T) {
	w := newWorld(t)
	w.failJWKS.Store(true)
	auth := "Bearer " + w.sign(w.claims(w.a), w.key, "at+jwt", w.kid)
	if got := w.burst(20, w.a, auth); got[http.StatusServiceUnavailable] != 20 {
		t.Fatalf("statuses %v, want 20 × 503", got)
	}
	if n := w.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 20 concurrent requests, want 1", n)
	}
	time.Sleep(50 * time.Millisecond)
	if got := w.burst(20, w.a, auth); got[http.StatusServiceUnavailable] != 20 {
		t.Fatalf("statuses %v, want 20 × 503", got)
	}
	if n := w.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches within the backoff, want 1", n)
	}
	w.failJWKS.Store(false)
	w.setNow(w.now.Add(2 * time.Second))
	if rec := w.do(w.a, auth); rec.Code != 200 {
		t.Fatalf("after the backoff: %d %s", rec.Code, rec.Body)
	}
	if err := w.mw.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestRevocationUnavailable: a certificate whose status cannot be
// established (OCSP and CRL unreachable) gets 503, not invalid_token.
func TestRevocationUnavailable(t *testing.T) {
	w := newWorld(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(idA)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		OCSPServer: []string{down.URL + "/ocsp"}, CRLDistributionPoints: []string{down.URL + "/crl"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, w.h.Issuing, key.Public(), w.h.IssuingKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: []*x509.Certificate{w.h.Root}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	m, err := oauth.New(oauth.Options{Verifier: v, Issuer: w.issuer, Audience: audience, HTTPClient: w.hc})
	if err != nil {
		t.Fatal(err)
	}
	w.handler = m.Wrap(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {}))
	w.setNow(time.Now())
	rec := w.do(leaf, "Bearer "+w.sign(w.claims(leaf), w.key, "at+jwt", w.kid))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("%d %q %s, want 503 without a challenge", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body["error"] != "temporarily_unavailable" {
		t.Fatalf("body %s", rec.Body)
	}
}

// FuzzAuthorization feeds arbitrary Authorization headers: never a panic,
// never an accepted request.
func FuzzAuthorization(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.e30.AAAA")
	f.Add("Bearer " + strings.Repeat("a.", 100))
	f.Add("bearer    ")
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	w := newWorld(f)
	f.Fuzz(func(t *testing.T, auth string) {
		if rec := w.do(w.a, auth); rec.Code == 200 {
			t.Fatalf("accepted %q", auth)
		}
	})
}
