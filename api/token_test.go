package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/wire"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	toolsURL  = "https://tools.example.org"
	agentA    = "spiffe://example.org/agent/a"
	testScope = "tools.read"
)

// claimsProvisioner vouches for a fixed identity with attested claims,
// standing in for an attestation such as k8s-sa.
type claimsProvisioner struct{ id provisioners.Identity }

func (p *claimsProvisioner) Attest(context.Context, string) (*provisioners.Identity, error) {
	id := p.id
	return &id, nil
}

// withTokens replaces e's server with one that also issues tokens (and
// applies pol, when set), on a new TLS test server.
func withTokens(t *testing.T, e *env, o *api.TokenOptions, pol *api.Policy) {
	t.Helper()
	if o == nil {
		o = &api.TokenOptions{}
	}
	if o.Signer == nil {
		o.Signer = mustKey(t, ca.ECP256)
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{testScope, "tools.write"}
	}
	if pol == nil {
		// Without a policy the token endpoint refuses everything.
		pol = mustPolicy(t, policy.Deny, policy.Rule{Name: "tokens", When: "true", Effect: policy.Allow, Endpoints: []string{"token"}},
			policy.Rule{Name: "certificates", When: "true", Effect: policy.Allow, Endpoints: []string{"sign", "renew"}})
	}
	e.provs["k8s"] = &api.Provisioner{Name: "k8s", Type: "k8s-sa", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour,
		Provisioner: &claimsProvisioner{id: provisioners.Identity{SPIFFEID: "spiffe://example.org/ns/sandbox/sa/x",
			Claims: map[string]string{"namespace": "sandbox", "service_account": "x"}}}}
	ts := httptest.NewUnstartedServer(nil)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	if o.Issuer == "" {
		o.Issuer = ts.URL
	}
	trust := e.srv.Trust()
	srv, err := api.New(api.Options{Authority: e.authority, Store: e.store, Trust: trust, Provisioners: e.provs,
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Registry: prometheus.NewRegistry(), Now: e.clock.Now,
		Tokens: o})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetPolicy(pol) // the Authority's, shared with the server it replaces
	ts.Config.Handler = srv.HTTPSHandler()
	e.srv, e.ts = srv, ts
}

// postForm posts a token request with client c.
func (e *env) postForm(c *http.Client, form url.Values) (*response, map[string]any) {
	e.t.Helper()
	r := do(e.t, c, http.MethodPost, e.ts.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		e.t.Fatalf("token endpoint answered %d with a body that is not JSON: %q", r.status, r.body)
	}
	return r, body
}

func tokenForm(scope string, resources ...string) url.Values {
	f := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	for _, r := range resources {
		f.Add("resource", r)
	}
	return f
}

// with sets a parameter of f and returns f.
func with(f url.Values, k, v string) url.Values {
	f.Set(k, v)
	return f
}

// oauthError checks a token endpoint error (RFC 6749 §5.2).
func oauthError(t *testing.T, r *response, body map[string]any, status int, code string) {
	t.Helper()
	if r.status != status || body["error"] != code {
		t.Fatalf("got %d %v, want %d %s", r.status, body, status, code)
	}
	if d, _ := body["error_description"].(string); d == "" {
		t.Errorf("no error_description in %v", body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
}

// verifyToken checks the JWT's signature against the published JWKS and
// returns its header and claims.
func (e *env) verifyToken(raw string) (jose.Header, map[string]any) {
	e.t.Helper()
	r := do(e.t, e.client(nil), http.MethodGet, e.ts.URL+"/.well-known/jwks.json", "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.body, &set); err != nil || len(set.Keys) == 0 {
		e.t.Fatalf("JWKS %s: %v", r.body, err)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		e.t.Fatal(err)
	}
	h := tok.Headers[0]
	var claims map[string]any
	if err := tok.Claims(set.Key(h.KeyID)[0].Key, &claims); err != nil {
		e.t.Fatalf("signature: %v", err)
	}
	return h, claims
}

func thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestTokenClientCredentials is the outside view: golang.org/x/oauth2's
// client credentials flow over mTLS gets a token bound to the client's
// certificate.
func TestTokenClientCredentials(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, nil, nil)
	a := e.enroll(agentA, "")
	cfg := clientcredentials.Config{ClientID: agentA, TokenURL: e.ts.URL + "/v1/token", Scopes: []string{testScope},
		EndpointParams: url.Values{"resource": {toolsURL}}, AuthStyle: oauth2.AuthStyleInParams}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.client(a.tls))
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.Extra("scope") != testScope {
		t.Errorf("token_type %q scope %v", tok.TokenType, tok.Extra("scope"))
	}
	if left := time.Until(tok.Expiry); left < 4*time.Minute || left > 5*time.Minute+time.Second {
		t.Errorf("expires in %s, want the 5m default", left)
	}
	h, c := e.verifyToken(tok.AccessToken)
	if h.ExtraHeaders["typ"] != "at+jwt" || h.Algorithm != "ES256" || h.KeyID == "" {
		t.Errorf("header %+v, want typ at+jwt, ES256 and a kid", h)
	}
	cnf, _ := c["cnf"].(map[string]any)
	if cnf["x5t#S256"] != thumbprint(a.leaf.Raw) {
		t.Errorf("cnf %v, want x5t#S256 %s", c["cnf"], thumbprint(a.leaf.Raw))
	}
	want := map[string]any{"iss": e.ts.URL, "sub": agentA, "client_id": agentA, "aud": toolsURL, "scope": testScope}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
	if c["exp"].(float64)-c["iat"].(float64) != 300 || c["jti"] == "" {
		t.Errorf("iat %v exp %v jti %v", c["iat"], c["exp"], c["jti"])
	}
	if !strings.Contains(e.logs.String(), `"op":"token"`) {
		t.Error("no audit line for the token")
	}
	// Another token has another jti.
	tok2, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, c2 := e.verifyToken(tok2.AccessToken); c2["jti"] == c["jti"] {
		t.Error("two tokens share a jti")
	}
}

// TestTokenJWKSPreviousKeys: during a rotation the previous key is
// published beside the signing key, which alone signs.
func TestTokenJWKSPreviousKeys(t *testing.T) {
	e := newEnv(t, envOptions{})
	prev := mustKey(t, ca.ECP256)
	withTokens(t, e, &api.TokenOptions{PreviousKeys: []crypto.PublicKey{prev.Public()}}, nil)
	r := do(t, e.client(nil), http.MethodGet, e.ts.URL+"/.well-known/jwks.json", "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(r.body, &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("JWKS %s (%v), want the token key and the previous one", r.body, err)
	}
	if k, ok := set.Keys[1].Key.(*ecdsa.PublicKey); !ok || !k.Equal(prev.Public()) || set.Keys[1].KeyID == set.Keys[0].KeyID {
		t.Fatalf("second key %+v is not the previous key", set.Keys[1])
	}
	a := e.enroll(agentA, "")
	_, body := e.postForm(e.client(a.tls), tokenForm(testScope, toolsURL))
	h, _ := e.verifyToken(body["access_token"].(string))
	if h.KeyID != set.Keys[0].KeyID {
		t.Errorf("token signed by kid %s, want the current key %s", h.KeyID, set.Keys[0].KeyID)
	}
}

func TestTokenMetadata(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, nil, nil)
	r := do(t, e.client(nil), http.MethodGet, e.ts.URL+"/.well-known/oauth-authorization-server", "", nil)
	var md map[string]any
	if err := json.Unmarshal(r.body, &md); err != nil || r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if md["issuer"] != e.ts.URL || md["token_endpoint"] != e.ts.URL+"/v1/token" || md["jwks_uri"] != e.ts.URL+"/.well-known/jwks.json" ||
		md["tls_client_certificate_bound_access_tokens"] != true {
		t.Errorf("metadata %v", md)
	}
	if m, _ := md["token_endpoint_auth_methods_supported"].([]any); len(m) != 1 || m[0] != "tls_client_auth" {
		t.Errorf("token_endpoint_auth_methods_supported = %v", md["token_endpoint_auth_methods_supported"])
	}
}

func TestTokenErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, &api.TokenOptions{Audiences: []string{toolsURL, "spiffe://example.org/tool"}}, nil)
	a := e.enroll(agentA, "")
	ca := e.client(a.tls)
	tests := []struct {
		name   string
		client *http.Client
		form   url.Values
		status int
		code   string
	}{
		{"no client certificate", e.client(nil), tokenForm(testScope, toolsURL), 401, "invalid_client"},
		{"unknown scope", ca, tokenForm("tools.delete", toolsURL), 400, "invalid_scope"},
		{"no scope", ca, tokenForm("", toolsURL), 400, "invalid_scope"},
		{"bad scope characters", ca, tokenForm(`tools"read`, toolsURL), 400, "invalid_scope"},
		{"no resource", ca, tokenForm(testScope), 400, "invalid_target"},
		{"resource not allowed", ca, tokenForm(testScope, "https://evil.example"), 400, "invalid_target"},
		{"resource with a fragment", ca, tokenForm(testScope, toolsURL+"#x"), 400, "invalid_target"},
		{"relative resource", ca, tokenForm(testScope, "/tools"), 400, "invalid_target"},
		{"grant type", ca, url.Values{"grant_type": {"password"}, "scope": {testScope}, "resource": {toolsURL}}, 400, "unsupported_grant_type"},
		{"no grant type", ca, url.Values{"scope": {testScope}, "resource": {toolsURL}}, 400, "invalid_request"},
		{"repeated scope", ca, url.Values{"grant_type": {"client_credentials"}, "scope": {testScope, testScope}, "resource": {toolsURL}}, 400, "invalid_request"},
		{"client secret", ca, with(tokenForm(testScope, toolsURL), "client_secret", "x"), 400, "invalid_request"},
		{"other client_id", ca, with(tokenForm(testScope, toolsURL), "client_id", "spiffe://example.org/agent/b"), 401, "invalid_client"},
		{"task of another certificate", ca, with(tokenForm(testScope, toolsURL), "task", "t-1"), 400, "invalid_request"},
		{"bad ttl", ca, with(tokenForm(testScope, toolsURL), "ttl", "2h"), 400, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, body := e.postForm(tc.client, tc.form)
			oauthError(t, r, body, tc.status, tc.code)
		})
	}
	t.Run("wrong content type", func(t *testing.T) {
		r := do(t, ca, http.MethodPost, e.ts.URL+"/v1/token", "application/json", strings.NewReader(`{}`))
		if r.status != 400 || !bytes.Contains(r.body, []byte(`"invalid_request"`)) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("GET", func(t *testing.T) {
		r := do(t, ca, http.MethodGet, e.ts.URL+"/v1/token", "", nil)
		if r.status != 405 || r.header.Get("Allow") != "POST" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("body too large", func(t *testing.T) {
		f := tokenForm(testScope, toolsURL)
		f.Set("pad", strings.Repeat("x", 10<<10))
		r, body := e.postForm(ca, f)
		oauthError(t, r, body, 413, "invalid_request")
	})
	t.Run("SPIFFE audience", func(t *testing.T) {
		f := tokenForm(testScope)
		f.Set("audience", "spiffe://example.org/tool")
		if r, body := e.postForm(ca, f); r.status != 200 {
			t.Fatalf("%d %v", r.status, body)
		}
	})
	t.Run("revoked client", func(t *testing.T) {
		b := e.enroll("spiffe://example.org/agent/revoked", "")
		if r := e.postJSON(e.client(b.tls), "/v1/revoke", []byte(`{}`)); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		r, body := e.postForm(e.client(b.tls), tokenForm(testScope, toolsURL))
		oauthError(t, r, body, 401, "invalid_client")
	})
	t.Run("provisioner no longer configured", func(t *testing.T) {
		b := e.enroll("spiffe://example.org/agent/orphan", "")
		if r, body := e.postForm(e.client(b.tls), tokenForm(testScope, toolsURL)); r.status != 200 {
			t.Fatalf("%d %v", r.status, body)
		}
		provs := maps.Clone(e.provs)
		delete(provs, "join")
		e.srv.SetProvisioners(provs)
		defer e.srv.SetProvisioners(e.provs)
		r, body := e.postForm(e.client(b.tls), tokenForm(testScope, toolsURL))
		oauthError(t, r, body, 401, "invalid_client")
		if !strings.Contains(body["error_description"].(string), "no longer configured") {
			t.Errorf("description %v", body["error_description"])
		}
	})
	t.Run("never beyond the certificate", func(t *testing.T) {
		short := e.enroll("spiffe://example.org/agent/short", "1m")
		r, body := e.postForm(e.client(short.tls), tokenForm(testScope, toolsURL))
		if r.status != 200 {
			t.Fatalf("%d %v", r.status, body)
		}
		_, c := e.verifyToken(body["access_token"].(string))
		if exp := time.Unix(int64(c["exp"].(float64)), 0); exp.After(short.leaf.NotAfter) {
			t.Errorf("token expires at %s, after its certificate %s", exp, short.leaf.NotAfter)
		}
		if body["expires_in"].(float64) > 60 {
			t.Errorf("expires_in %v for a certificate with a minute left", body["expires_in"])
		}
	})
}

// TestTokenWithoutPolicy: no policy means no token (fail closed), while
// certificates are still issued.
func TestTokenWithoutPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, nil, nil)
	e.srv.SetPolicy(nil)
	a := e.enroll(agentA, "")
	r, body := e.postForm(e.client(a.tls), tokenForm(testScope, toolsURL))
	oauthError(t, r, body, http.StatusForbidden, "access_denied")
	if !strings.Contains(body["error_description"].(string), "no runtime policy") {
		t.Errorf("description %v", body["error_description"])
	}
	if !strings.Contains(e.logs.String(), `"rule":"no-policy"`) {
		t.Error("the refusal's audit line does not say there is no policy")
	}
}

func TestTokenDisabled(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
	if r.status != http.StatusNotFound {
		t.Fatalf("a CA without tokens answered %d %s", r.status, r.body)
	}
}

func mustPolicy(t *testing.T, def policy.Effect, rules ...policy.Rule) *api.Policy {
	t.Helper()
	p, err := policy.Compile(policy.File{Rules: rules}, def)
	if err != nil {
		t.Fatal(err)
	}
	return &api.Policy{Rules: p, Environment: map[string]string{"region": "eu"}}
}

func TestPolicyAtSignRenewToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	pol := mustPolicy(t, policy.Allow,
		policy.Rule{Name: "no-sandbox", When: "provisioner == 'k8s' && claims['namespace'] == 'sandbox'", Effect: policy.Deny, Endpoints: []string{"sign"}},
		policy.Rule{Name: "no-night", When: "now.getHours('UTC') >= 22", Effect: policy.Deny, Endpoints: []string{"token"}},
		policy.Rule{Name: "no-write", When: "'tools.write' in scope && environment['region'] == 'eu'", Effect: policy.Deny, Endpoints: []string{"token"}},
		policy.Rule{Name: "task-cap", When: "task != ''", Effect: policy.Cap, MaxTTL: "2m"},
		policy.Rule{Name: "renew-cap", When: "endpoint == 'renew' && ttl > duration('10m')", Effect: policy.Cap, MaxTTL: "10m"},
	)
	withTokens(t, e, nil, pol)
	e.clock.Set(time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC))

	t.Run("deny by namespace", func(t *testing.T) {
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "k8s", Token: "x", CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
		apiError(t, r, http.StatusForbidden, api.CodePolicyDenied)
		if !strings.Contains(e.logs.String(), `"rule":"no-sandbox"`) {
			t.Error("the decision's audit line does not name the rule")
		}
	})
	var tasked *enrolled
	t.Run("cap by task", func(t *testing.T) {
		key := mustKey(t, ca.ECP256)
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(agentA), CSR: csrFor(t, key, nil), TTL: "30m", Task: "t-42"})
		if r.status != http.StatusCreated {
			t.Fatalf("%d %s", r.status, r.body)
		}
		tasked = enrolledFrom(t, key, r)
		if life := tasked.leaf.NotAfter.Sub(tasked.leaf.NotBefore); life != 3*time.Minute {
			t.Errorf("lifetime %s, want the 2m cap + 1m backdate", life)
		}
		rec, err := e.store.Certificate(context.Background(), tasked.resp.Serial)
		if err != nil || rec.Task != "t-42" {
			t.Fatalf("record task %q (%v), want t-42", rec.Task, err)
		}
	})
	t.Run("renewal keeps the task and its cap", func(t *testing.T) {
		r := e.postJSON(e.client(tasked.tls), "/v1/renew", []byte(`{"ttl":"20m"}`))
		if r.status != http.StatusCreated {
			t.Fatalf("%d %s", r.status, r.body)
		}
		got := enrolledFrom(t, tasked.key, r)
		rec, _ := e.store.Certificate(context.Background(), got.resp.Serial)
		if rec.Task != "t-42" || got.leaf.NotAfter.Sub(got.leaf.NotBefore) != 3*time.Minute {
			t.Errorf("renewal: task %q, lifetime %s", rec.Task, got.leaf.NotAfter.Sub(got.leaf.NotBefore))
		}
	})
	t.Run("renewal cap", func(t *testing.T) {
		a := e.enroll("spiffe://example.org/agent/renewcap", "")
		r := e.postJSON(e.client(a.tls), "/v1/renew", []byte(`{"ttl":"30m"}`))
		if r.status != http.StatusCreated {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if got := enrolledFrom(t, a.key, r); got.leaf.NotAfter.Sub(got.leaf.NotBefore) != 11*time.Minute {
			t.Errorf("lifetime %s, want 10m + 1m", got.leaf.NotAfter.Sub(got.leaf.NotBefore))
		}
	})
	t.Run("token carries the task", func(t *testing.T) {
		r, body := e.postForm(e.client(tasked.tls), tokenForm(testScope, toolsURL))
		if r.status != 200 {
			t.Fatalf("%d %v", r.status, body)
		}
		_, c := e.verifyToken(body["access_token"].(string))
		if c["task"] != "t-42" || c["exp"].(float64)-c["iat"].(float64) != 120 {
			t.Errorf("task %v, lifetime %v, want t-42 and the 2m cap", c["task"], c["exp"].(float64)-c["iat"].(float64))
		}
	})
	t.Run("deny by scope", func(t *testing.T) {
		a := e.enroll(agentA, "")
		r, body := e.postForm(e.client(a.tls), tokenForm(testScope+" tools.write", toolsURL))
		oauthError(t, r, body, 403, "access_denied")
		if !strings.Contains(body["error_description"].(string), "no-write") {
			t.Errorf("description %v does not name the rule", body["error_description"])
		}
	})
	t.Run("deny by time", func(t *testing.T) {
		e.clock.Set(time.Date(2026, 3, 4, 22, 30, 0, 0, time.UTC))
		defer e.clock.Set(time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC))
		a := e.enroll(agentA, "")
		r, body := e.postForm(e.client(a.tls), tokenForm(testScope, toolsURL))
		oauthError(t, r, body, 403, "access_denied")
	})
	t.Run("task end", func(t *testing.T) {
		r := do(t, e.admin.Client(), http.MethodPost, e.admin.URL+"/admin/v1/tasks/end", "application/json", strings.NewReader(`{"task":"t-42"}`))
		var out wire.TaskEndResponse
		if err := json.Unmarshal(r.body, &out); err != nil || r.status != 200 || len(out.Revoked) != 2 {
			t.Fatalf("%d %s: want both certificates of t-42 revoked", r.status, r.body)
		}
		r2, body := e.postForm(e.client(tasked.tls), tokenForm(testScope, toolsURL))
		oauthError(t, r2, body, 401, "invalid_client")
		// No new certificate for the ended task: not by enrolling...
		sr := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(agentA), CSR: csrFor(t, mustKey(t, ca.ECP256), nil), Task: "t-42"})
		apiError(t, sr, http.StatusForbidden, api.CodeTaskEnded)
		// ... nor by renewing one of its (revoked) certificates.
		rr := e.postJSON(e.client(tasked.tls), "/v1/renew", []byte(`{}`))
		if rr.status != http.StatusForbidden {
			t.Fatalf("renewal of an ended task's certificate: %d %s", rr.status, rr.body)
		}
		bad := do(t, e.admin.Client(), http.MethodPost, e.admin.URL+"/admin/v1/tasks/end", "application/json", strings.NewReader(`{"task":"a b"}`))
		apiError(t, bad, 400, api.CodeBadRequest)
	})
	t.Run("renewal refused by the store once the task ended", func(t *testing.T) {
		// A certificate of a task ended in the store but not (yet)
		// revoked, as between EndTask and the revocations: its renewal
		// is refused in the issuing transaction.
		key := mustKey(t, ca.ECP256)
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(agentA), CSR: csrFor(t, key, nil), Task: "t-43"})
		if r.status != http.StatusCreated {
			t.Fatalf("%d %s", r.status, r.body)
		}
		c := enrolledFrom(t, key, r)
		if err := e.store.EndTask(context.Background(), "t-43", e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		apiError(t, e.postJSON(e.client(c.tls), "/v1/renew", []byte(`{}`)), http.StatusForbidden, api.CodeTaskEnded)
	})
	t.Run("bad task at sign", func(t *testing.T) {
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(agentA), CSR: csrFor(t, mustKey(t, ca.ECP256), nil), Task: "no spaces"})
		apiError(t, r, http.StatusBadRequest, api.CodeBadRequest)
	})
}
