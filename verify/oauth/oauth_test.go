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
	handler  http.Handler
	now      time.Time
	jwksKeys func() []jose.JSONWebKey
}

func newWorld(t testing.TB) *world {
	t.Helper()
	h, err := ca.NewHierarchy("oauth-test", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, h: h, now: time.Now()}
	w.a, w.b = w.leaf(idA), w.leaf(idB)
	w.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.kid = "k1"
	w.jwksKeys = func() []jose.JSONWebKey {
		return []jose.JSONWebKey{{Key: &w.key.PublicKey, KeyID: w.kid, Algorithm: "ES256", Use: "sig"}}
	}
	ts := httptest.NewTLSServer(nil)
	t.Cleanup(ts.Close)
	w.issuer = ts.URL
	ts.Config.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(rw).Encode(map[string]string{"issuer": ts.URL, "jwks_uri": ts.URL + "/jwks"})
		case "/jwks":
			w.fetches.Add(1)
			_ = json.NewEncoder(rw).Encode(jose.JSONWebKeySet{Keys: w.jwksKeys()})
		default:
			http.NotFound(rw, r)
		}
	})
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: []*x509.Certificate{h.Root}, DisableRevocation: true,
		Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	m, err := oauth.New(oauth.Options{Verifier: v, Issuer: ts.URL, Audience: audience, Scopes: []string{"tools.read"},
		HTTPClient: ts.Client(), Leeway: -1, Now: func() time.Time { return w.now }})
	if err != nil {
		t.Fatal(err)
	}
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
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
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
	w.now = w.now.Add(11 * time.Second)
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
