package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/wire"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtEnv is an API server issuing JWT-SVIDs with one key, and a client
// certificate for agentA living leafTTL.
type jwtEnv struct {
	srv     *api.Server
	handler http.Handler
	trust   *api.Trust
	state   *tls.ConnectionState
	leaf    *x509.Certificate
}

func newJWTEnv(tb testing.TB, leafTTL time.Duration, withKey bool) *jwtEnv {
	tb.Helper()
	c := newBoltCA(tb)
	st, authority, trust := c.st, c.authority, c.trust
	if withKey {
		key := mustKey(tb, ca.ECP256)
		other := mustKey(tb, ca.ECP256) // a staged anchor's key: published, not signing
		if err := trust.SetJWTKeys([]crypto.PublicKey{key.Public(), other.Public()}, key); err != nil {
			tb.Fatal(err)
		}
	}
	pol, err := policy.Compile(policy.File{Rules: []policy.Rule{
		{Name: "no-forbidden", When: "'https://forbidden.example.org' in audience", Effect: policy.Deny, Endpoints: []string{"jwt-svid"}},
	}}, policy.Allow)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust,
		Provisioners: map[string]*api.Provisioner{"k8s": {Name: "k8s", Provisioner: &claimsProvisioner{}}},
		JWTSVID:      &api.JWTSVIDOptions{Issuer: "https://ca.example.org/"},
		ClientCerts:  api.NewClientCerts(0, nil)}) // as the daemon does
	if err != nil {
		tb.Fatal(err)
	}
	srv.SetPolicy(&api.Policy{Rules: pol})
	issued, err := authority.Issue(context.Background(), &ca.Request{PublicKey: mustKey(tb, ca.ECP256).Public(), SPIFFEID: agentA,
		Provisioner: "k8s", TTL: leafTTL})
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		tb.Fatal(err)
	}
	return &jwtEnv{srv: srv, handler: srv.HTTPSHandler(), trust: trust, leaf: leaf,
		state: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}}
}

func (e *jwtEnv) post(body string, withCert bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/v1/jwt-svid", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if withCert {
		r.TLS = e.state
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, r)
	return w
}

func (e *jwtEnv) get(path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

// TestJWTSVIDEndpoint: claims, the lifetime capped by the client
// certificate, the bundle and jwks_uri, discovery, and refusals.
func TestJWTSVIDEndpoint(t *testing.T) {
	e := newJWTEnv(t, 2*time.Minute, true)
	w := e.post(`{"audience":["https://svc.example.org","https://svc.example.org","spiffe://example.org/svc"],"ttl":"30m"}`, true)
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %s %v", w.Code, w.Body, w.Header())
	}
	var resp wire.JWTSVIDResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.SPIFFEID != agentA || !resp.ExpiresAt.Equal(e.leaf.NotAfter) {
		t.Errorf("want %s expiring with its certificate (%s), got %+v", agentA, e.leaf.NotAfter, resp)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(testTD), e.get("/v1/bundle").Body.Bytes())
	if err != nil || len(b.JWTAuthorities()) != 2 {
		t.Fatalf("bundle: %v, %d JWT authorities", err, len(b.JWTAuthorities()))
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Token, b, []string{"spiffe://example.org/svc"})
	if err != nil {
		t.Fatal(err)
	}
	if svid.Claims["iss"] != "https://ca.example.org" || len(svid.Audience) != 2 {
		t.Errorf("claims %v (want iss without the trailing slash, two distinct audiences)", svid.Claims)
	}
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(e.get(api.JWTKeysPath).Body.Bytes(), &jwks); err != nil || len(jwks.Keys) != 2 || jwks.Keys[0]["use"] != "sig" {
		t.Errorf("jwks_uri: %v %v", err, jwks)
	}
	var disc map[string]any
	if err := json.Unmarshal(e.get("/.well-known/openid-configuration").Body.Bytes(), &disc); err != nil ||
		disc["issuer"] != "https://ca.example.org" || disc["jwks_uri"] != "https://ca.example.org"+api.JWTKeysPath {
		t.Errorf("discovery: %v %v", err, disc)
	}
	for _, c := range []struct {
		body     string
		cert     bool
		status   int
		code     string
		contains string
	}{
		{`{"audience":["x"]}`, false, 401, api.CodeClientCertRequired, ""},
		{`{}`, true, 400, api.CodeBadRequest, "audience is required"},
		{`{"audience":[""]}`, true, 400, api.CodeBadRequest, ""},
		{`{"audience":["a b"]}`, true, 400, api.CodeBadRequest, ""},
		{`{"audience":["1","2","3","4","5","6","7","8","9"]}`, true, 400, api.CodeBadRequest, "at most 8"},
		{`{"audience":["x"],"ttl":"2h"}`, true, 400, api.CodeBadTTL, ""},
		{`{"audience":["x"],"ttl":"0s"}`, true, 400, api.CodeBadTTL, ""},
		{`{"audience":["x"],"sub":"spiffe://example.org/admin"}`, true, 400, api.CodeBadRequest, ""},
		{`{"audience":["https://forbidden.example.org"]}`, true, 403, "policy_denied", "no-forbidden"},
	} {
		w := e.post(c.body, c.cert)
		var got wire.Error
		_ = json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != c.status || got.Code != c.code || !strings.Contains(got.Message, c.contains) {
			t.Errorf("%s: want %d %s (%q), got %d %s", c.body, c.status, c.code, c.contains, w.Code, w.Body)
		}
	}
}

// TestJWTSVIDWithoutKey: no signing key for the active anchor: 503, and
// the bundle and jwks_uri publish no JWT key.
func TestJWTSVIDWithoutKey(t *testing.T) {
	e := newJWTEnv(t, time.Hour, false)
	w := e.post(`{"audience":["x"]}`, true)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), api.CodeJWTKeyUnavailable) {
		t.Errorf("%d %s", w.Code, w.Body)
	}
	if got := e.get(api.JWTKeysPath).Body.String(); got != `{"keys":[]}` {
		t.Errorf("jwks_uri: %s", got)
	}
	// A signer whose key is not published is refused.
	k := mustKey(t, ca.ECP256)
	if err := e.trust.SetJWTKeys(nil, k); err == nil {
		t.Error("SetJWTKeys accepted an unpublished signer")
	}
	if _, ok := k.Public().(*ecdsa.PublicKey); !ok {
		t.Fatal("not ECDSA")
	}
	if err := e.trust.SetJWTKeys([]crypto.PublicKey{mustKey(t, ca.Ed25519).Public()}, nil); err == nil {
		t.Error("SetJWTKeys accepted an Ed25519 key")
	}
}

// BenchmarkJWTSVID is one POST /v1/jwt-svid through the HTTPS handler,
// without TLS or the network: the client certificate check (a store
// read), the JSON body, one policy decision, the ES256 signature and the
// audit line.
func BenchmarkJWTSVID(b *testing.B) {
	e := newJWTEnv(b, time.Hour, true)
	body := `{"audience":["https://svc.example.org"]}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if w := e.post(body, true); w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}

// FuzzJWTSVIDRequest feeds arbitrary bodies to POST /v1/jwt-svid: never a
// panic or a 5xx, and a 200 only with a JWT-SVID for the caller.
func FuzzJWTSVIDRequest(f *testing.F) {
	f.Add(`{"audience":["https://svc.example.org"]}`)
	f.Add(`{"audience":["a","b"],"ttl":"90s"}`)
	f.Add(`{"audience":"a"}`)
	f.Add(`{"audience":[1]}`)
	f.Add(`{"audience":["a"]} x`)
	e := newJWTEnv(f, time.Hour, true)
	f.Fuzz(func(t *testing.T, body string) {
		w := e.post(body, true)
		switch {
		case w.Code == http.StatusOK:
			var resp wire.JWTSVIDResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.SPIFFEID != agentA || resp.Token == "" {
				t.Fatalf("200 with %s", w.Body)
			}
		case w.Code < 400 || w.Code > 499:
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	})
}
