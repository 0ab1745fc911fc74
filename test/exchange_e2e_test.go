package test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/exchange"
	"github.com/agentca/agentca/wire"
	"github.com/go-jose/go-jose/v4"
)

// testIdP is an identity provider with its own RSA key, serving OIDC
// discovery and its JWKS over loopback HTTPS.
type testIdP struct {
	t      *testing.T
	URL    string
	CAFile string
	key    *rsa.PrivateKey
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIdP{t: t, key: key}
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.URL, "jwks_uri": p.URL + "/keys",
				"id_token_signing_alg_values_supported": []string{"RS256"}, "response_types_supported": []string{"code"},
				"subject_types_supported": []string{"public"}, "authorization_endpoint": p.URL + "/authorize"})
		case "/keys":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "idp-1", Algorithm: "RS256", Use: "sig"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	p.URL = ts.URL
	p.CAFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	writeFile(t, p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	return p
}

// sign makes an RS256 JWT with claims, signed by key (nil: the IdP's).
func (p *testIdP) sign(claims map[string]any, key *rsa.PrivateKey) string {
	p.t.Helper()
	if key == nil {
		key = p.key
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "idp-1"))
	if err != nil {
		p.t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		p.t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// userClaims are alice's token claims at the IdP, to be edited.
func (p *testIdP) userClaims() map[string]any {
	now := time.Now()
	return map[string]any{"iss": p.URL, "sub": "alice", "aud": "agentca-e2e", "email": "alice@example.org",
		"scope": "tools.read mail.read", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
}

// exchangePolicy: a chain must start at a user, no agent appears twice,
// then exchanges are allowed.
const exchangePolicy = `{"rules": [
  {"name": "tools", "endpoints": ["token"], "when": "true", "effect": "allow"},
  {"name": "human-start", "endpoints": ["token-exchange"], "when": "subject_type != 'user'", "effect": "deny"},
  {"name": "no-repeat", "endpoints": ["token-exchange"], "when": "spiffe_id in actors", "effect": "deny"},
  {"name": "exchange", "endpoints": ["token-exchange"], "when": "chain_depth <= 3 && subject_claims.?email.orValue('').endsWith('@example.org')", "effect": "allow"}
]}`

// newExchangeCA is a CA that exchanges tokens of idp, chains of at most
// two actors.
func newExchangeCA(t *testing.T, idp *testIdP) *testCA {
	t.Helper()
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) {
		cfg["tokens"] = map[string]any{"scopes": []string{"tools.read", "tools.write", "mail.read"},
			"exchange": map[string]any{"max_chain": 2, "issuers": []map[string]any{
				{"issuer": idp.URL, "audience": "agentca-e2e", "ca_file": idp.CAFile}}}}
	})
	withPolicy(c, exchangePolicy)
	return c
}

// agentCreds enrolls id (extra: enroll flags) and returns its certificate.
func agentCreds(t *testing.T, c *testCA, id string, extra ...string) *tls.Certificate {
	t.Helper()
	dir := filepath.Join(t.TempDir(), strings.ReplaceAll(strings.TrimPrefix(id, "spiffe://"), "/", "_"))
	if r := c.enroll(c.token(id), dir, extra...); r.code != 0 {
		t.Fatalf("enroll %s:\n%s", id, r)
	}
	return readCreds(t, dir).tlsCert()
}

// oauthAnswer is a token endpoint answer: a token or an error.
type oauthAnswer struct {
	status int
	wire.ExchangeResponse
	wire.OAuthError
}

// exchangeAs posts a token exchange with cert; params are name, value
// pairs beside the grant type.
func exchangeAs(t *testing.T, c *testCA, cert *tls.Certificate, params ...string) oauthAnswer {
	t.Helper()
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}}
	for i := 0; i < len(params); i += 2 {
		form.Add(params[i], params[i+1])
	}
	hc := c.client(cert)
	defer hc.CloseIdleConnections()
	r := do(t, hc, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	var a oauthAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("exchange answer %d %s: %v", r.status, r.body, err)
	}
	a.status = r.status
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("exchange answer without Cache-Control: no-store")
	}
	return a
}

func wantExchanged(t *testing.T, a oauthAnswer) string {
	t.Helper()
	if a.status != 200 || a.AccessToken == "" || a.IssuedTokenType != exchange.TypeAccessToken {
		t.Fatalf("exchange: %d %s: %s", a.status, a.Code, a.Description)
	}
	return a.AccessToken
}

func wantRefused(t *testing.T, name string, a oauthAnswer, status int, code, desc string) {
	t.Helper()
	if a.status != status || a.Code != code || !strings.Contains(a.Description, desc) {
		t.Errorf("%s: %d %s %q, want %d %s containing %q", name, a.status, a.Code, a.Description, status, code, desc)
	}
}

const (
	idAgentA = "spiffe://example.org/agent/a"
	idAgentB = "spiffe://example.org/agent/b"
	idAgentC = "spiffe://example.org/agent/c"
	jwtType  = "urn:ietf:params:oauth:token-type:jwt"
	atType   = "urn:ietf:params:oauth:token-type:access_token"
)

// TestTokenExchangeChain: alice's token from the test IdP is exchanged by
// agent A for a token to call agent B; B exchanges it for a token to call
// the tool; the tool sees sub = alice and act = B <- A; the token with
// A's certificate is refused; wider scopes, a longer chain and ending the
// task are refused.
func TestTokenExchangeChain(t *testing.T) {
	idp := newTestIdP(t)
	c := newExchangeCA(t, idp)
	c.start()
	tool := toolServer(t, c, "tools.read")
	a := agentCreds(t, c, idAgentA, "--task", "trip-42")
	b, cc := agentCreds(t, c, idAgentB), agentCreds(t, c, idAgentC)
	user := idp.sign(idp.userClaims(), nil)

	// A: alice's token → a token for B (named by its SPIFFE ID, so that B
	// may exchange it in turn).
	t1 := wantExchanged(t, exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType,
		"scope", "tools.read", "audience", idAgentB))
	cl := jwtClaims(t, t1)
	act, _ := json.Marshal(cl["act"])
	if cl["sub"] != "alice" || cl["subject_issuer"] != idp.URL || string(act) != `{"sub":"`+idAgentA+`"}` ||
		cl["client_id"] != idAgentA || cl["task"] != "trip-42" || cl["scope"] != "tools.read" ||
		cl["cnf"].(map[string]any)["x5t#S256"] != exchange.Thumbprint(a.Certificate[0]) {
		t.Fatalf("A's token claims %v", cl)
	}
	if exp := int64(cl["exp"].(float64)); exp > int64(idp.userClaims()["exp"].(int64)) || exp > a.Leaf.NotAfter.Unix() {
		t.Errorf("A's token outlives the subject token or A's certificate: exp %d", exp)
	}
	// B: that token → a token for the tool.
	t2 := wantExchanged(t, exchangeAs(t, c, b, "subject_token", t1, "subject_token_type", atType, "resource", tool))
	cl = jwtClaims(t, t2)
	act, _ = json.Marshal(cl["act"])
	if actors, err := exchange.ParseAct(act); err != nil || exchange.Chain(actors) != idAgentB+" <- "+idAgentA ||
		cl["sub"] != "alice" || cl["task"] != "trip-42" {
		t.Fatalf("B's token claims %v", cl)
	}
	hcB, hcA := toolClient(c, b), toolClient(c, a)
	defer hcB.CloseIdleConnections()
	defer hcA.CloseIdleConnections()
	r := call(t, hcB, tool, t2)
	if want := idAgentB + "\nsub=alice act=" + idAgentB + " <- " + idAgentA; r.status != 200 || string(r.body) != want {
		t.Fatalf("the tool with B's token: %d %q, want %q", r.status, r.body, want)
	}
	// The same token presented with A's certificate: bound to B's.
	if r := call(t, hcA, tool, t2); r.status != 401 {
		t.Errorf("B's token with A's certificate: %d %s", r.status, r.body)
	}
	// A's token is for B, not for the tool.
	if r := call(t, hcA, tool, t1); r.status != 401 {
		t.Errorf("A's token (aud B) at the tool: %d %s", r.status, r.body)
	}

	// Never wider: a scope alice's token does not grant, a scope A's
	// token does not carry.
	wantRefused(t, "A asks for tools.write", exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType,
		"scope", "tools.write", "audience", idAgentB), 400, "invalid_scope", "wider than the subject_token's")
	wantRefused(t, "B asks for mail.read", exchangeAs(t, c, b, "subject_token", t1, "subject_token_type", atType,
		"scope", "mail.read", "resource", tool), 400, "invalid_scope", "wider than the subject_token's")
	// Only the audience may exchange a token: C is not B.
	wantRefused(t, "C exchanges B's token", exchangeAs(t, c, cc, "subject_token", t1, "subject_token_type", atType,
		"resource", tool), 400, "invalid_request", "audience")
	// Deeper than max_chain (2): B → C, then C would be the third actor.
	t2c := wantExchanged(t, exchangeAs(t, c, b, "subject_token", t1, "subject_token_type", atType, "audience", idAgentC))
	wantRefused(t, "a third actor", exchangeAs(t, c, cc, "subject_token", t2c, "subject_token_type", atType,
		"resource", tool), 400, "invalid_request", "chain of actors")
	// The policy: no agent twice (A exchanges a token it got for
	// itself), a chain starts at a user (A's own client-credentials
	// token).
	back := wantExchanged(t, exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType, "audience", idAgentA))
	wantRefused(t, "A twice", exchangeAs(t, c, a, "subject_token", back, "subject_token_type", atType, "resource", tool),
		403, "unauthorized_client", "no-repeat")
	own := tokenGetCert(t, c, a, "audience", idAgentB)
	wantRefused(t, "a workload subject", exchangeAs(t, c, b, "subject_token", own, "subject_token_type", atType, "resource", tool),
		403, "unauthorized_client", "human-start")

	// One audit line per exchange, with the whole chain.
	if !strings.Contains(c.proc.log(), `op=token-exchange`) ||
		!strings.Contains(c.proc.log(), `actors="`+idAgentB+` <- `+idAgentA+`" chain_depth=2`) {
		t.Errorf("no audit line with the chain:\n%s", c.proc.log())
	}

	// Ending the task: the tool refuses B's token (B's certificate is not
	// revoked: B was not enrolled for the task) within its status cache
	// age (200 ms), and no exchange names the task any more.
	mustRun(t, "task", "end", "--dir", c.Dir, "trip-42")
	ended := time.Now()
	eventually(t, 5*time.Second, 50*time.Millisecond, "the tool to refuse the ended task's chain", func() bool {
		return call(t, hcB, tool, t2).status == 401
	})
	// 200 ms of cache age plus the round trips of a loaded machine.
	if d := time.Since(ended); d > 3*time.Second {
		t.Errorf("the tool refused the ended task after %s", d)
	}
	wantRefused(t, "exchange after the task ended", exchangeAs(t, c, b, "subject_token", t1, "subject_token_type", atType,
		"resource", tool), 400, "invalid_grant", "task")
}

// tokenGetCert gets a client-credentials token with cert.
func tokenGetCert(t *testing.T, c *testCA, cert *tls.Certificate, params ...string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"tools.read"}}
	for i := 0; i < len(params); i += 2 {
		form.Add(params[i], params[i+1])
	}
	hc := c.client(cert)
	defer hc.CloseIdleConnections()
	r := do(t, hc, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	var a oauthAnswer
	if json.Unmarshal(r.body, &a) != nil || r.status != 200 {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	return a.AccessToken
}

// TestTokenExchangeRefusesSubjectTokens: an untrusted issuer, an expired
// token, an act claim smuggled into a user's token, another audience, a
// bad signature: invalid_request (RFC 8693 §2.2.2), naming why.
func TestTokenExchangeRefusesSubjectTokens(t *testing.T) {
	idp := newTestIdP(t)
	c := newExchangeCA(t, idp)
	c.start()
	a := agentCreds(t, c, idAgentA)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	with := func(kv ...any) map[string]any {
		m := idp.userClaims()
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name, token, desc string
	}{
		{"untrusted issuer", idp.sign(with("iss", "https://evil.example"), other), "not trusted"},
		{"expired", idp.sign(with("exp", time.Now().Add(-time.Minute).Unix(), "iat", time.Now().Add(-10*time.Minute).Unix()), nil), "expired"},
		{"smuggled act", idp.sign(with("act", map[string]any{"sub": idAgentB}), nil), "act claim"},
		{"other audience", idp.sign(with("aud", "someone-else"), nil), "audience"},
		{"signed by another key", idp.sign(idp.userClaims(), other), "signature"},
		{"not a JWT", "not-a-jwt", "not a signed JWT"},
		{"may_act naming another agent", idp.sign(with("may_act", map[string]any{"sub": idAgentB}), nil), "may_act"},
	} {
		wantRefused(t, tc.name, exchangeAs(t, c, a, "subject_token", tc.token, "subject_token_type", jwtType,
			"audience", idAgentB), 400, "invalid_request", tc.desc)
	}
	// A's token addressed to the CA, lifted by B: only A may exchange it.
	b := agentCreds(t, c, idAgentB)
	wantRefused(t, "a lifted CA-addressed token", exchangeAs(t, c, b, "subject_token", tokenGetCert(t, c, a, "audience", c.URL),
		"subject_token_type", atType, "audience", idAgentC), 400, "invalid_request", "only by the agent it was issued to")
	// may_act naming the caller: accepted.
	wantExchanged(t, exchangeAs(t, c, a, "subject_token", idp.sign(with("may_act", map[string]any{"sub": idAgentA}), nil),
		"subject_token_type", jwtType, "scope", "tools.read", "audience", idAgentB))
	// An IdP token presented as this CA's access token.
	wantRefused(t, "type access_token", exchangeAs(t, c, a, "subject_token", idp.sign(idp.userClaims(), nil),
		"subject_token_type", atType, "audience", idAgentB), 400, "invalid_request", "did not issue")
	// No client certificate: invalid_client before anything else.
	wantRefused(t, "no certificate", exchangeAs(t, c, nil, "subject_token", idp.sign(idp.userClaims(), nil),
		"subject_token_type", jwtType, "audience", idAgentB), 401, "invalid_client", "")
	// The metadata advertises the grant.
	hc := c.client(nil)
	defer hc.CloseIdleConnections()
	md := do(t, hc, http.MethodGet, c.URL+"/.well-known/oauth-authorization-server", "", nil)
	if !strings.Contains(string(md.body), "urn:ietf:params:oauth:grant-type:token-exchange") {
		t.Errorf("metadata without the token-exchange grant: %s", md.body)
	}
	// Task status: anyone may ask.
	ts := do(t, hc, http.MethodGet, c.URL+"/v1/task-status?task=nothing-yet", "", nil)
	if ts.status != 200 || strings.TrimSpace(string(ts.body)) != `{"task":"nothing-yet","ended":false}` {
		t.Errorf("task status: %d %s", ts.status, ts.body)
	}
}

// TestPolicyTestTokenExchange: agentca policy test evaluates the chain
// variables offline.
func TestPolicyTestTokenExchange(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.json")
	writeFile(t, pol, []byte(exchangePolicy))
	for _, tc := range []struct {
		req  string
		code int
		out  string
	}{
		{`{"endpoint": "token-exchange", "spiffe_id": "` + idAgentB + `", "subject": "alice", "subject_type": "user",
		   "subject_claims": {"email": "alice@example.org"}, "actors": ["` + idAgentA + `"], "chain_depth": 2}`, 0, `rule "exchange"`},
		{`{"endpoint": "token-exchange", "spiffe_id": "` + idAgentA + `", "subject": "alice", "subject_type": "user",
		   "actors": ["` + idAgentA + `"], "chain_depth": 2}`, 1, `rule "no-repeat"`},
		{`{"endpoint": "token-exchange", "spiffe_id": "` + idAgentB + `", "subject": "` + idAgentA + `", "subject_type": "workload", "chain_depth": 1}`, 1, `rule "human-start"`},
	} {
		req := filepath.Join(dir, "req.json")
		writeFile(t, req, []byte(tc.req))
		r := runCLI(t, "policy", "test", "--policy", pol, "--default", "deny", "--request", req)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.out) {
			t.Errorf("policy test %s:\n%s", tc.req, r)
		}
	}
}

// jwtSVIDFor gets a JWT-SVID for cert's identity with audience aud.
func jwtSVIDFor(t *testing.T, c *testCA, cert *tls.Certificate, aud string) string {
	t.Helper()
	hc := c.client(cert)
	defer hc.CloseIdleConnections()
	r := postJSON(t, hc, c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{aud}})
	var out struct {
		Token string `json:"token"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
		t.Fatalf("jwt-svid: %d %s", r.status, r.body)
	}
	return out.Token
}

// TestTokenExchangeJWTSVIDAndActorToken: a JWT-SVID is a workload
// subject (the policy's human-start rule refuses it; only its audience
// may present it); an actor token must be the caller's own.
func TestTokenExchangeJWTSVIDAndActorToken(t *testing.T) {
	idp := newTestIdP(t)
	c := newExchangeCA(t, idp)
	c.start()
	a, b, cc := agentCreds(t, c, idAgentA), agentCreds(t, c, idAgentB), agentCreds(t, c, idAgentC)
	svidForB := jwtSVIDFor(t, c, a, idAgentB)
	wantRefused(t, "a JWT-SVID subject", exchangeAs(t, c, b, "subject_token", svidForB, "subject_token_type", jwtType,
		"scope", "tools.read", "audience", idAgentC), 403, "unauthorized_client", "human-start")
	wantRefused(t, "a JWT-SVID for B presented by C", exchangeAs(t, c, cc, "subject_token", svidForB, "subject_token_type", jwtType,
		"scope", "tools.read", "audience", idAgentB), 400, "invalid_request", "audience")
	user := idp.sign(idp.userClaims(), nil)
	own := jwtSVIDFor(t, c, a, c.URL)
	tok := wantExchanged(t, exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType,
		"actor_token", own, "actor_token_type", jwtType, "scope", "tools.read", "audience", idAgentB))
	if cl := jwtClaims(t, tok); cl["sub"] != "alice" {
		t.Errorf("claims %v", cl)
	}
	wantRefused(t, "another agent's actor token", exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType,
		"actor_token", jwtSVIDFor(t, c, b, c.URL), "actor_token_type", jwtType, "audience", idAgentB), 400, "invalid_request", "actor_token")
	wantRefused(t, "actor token without its type", exchangeAs(t, c, a, "subject_token", user, "subject_token_type", jwtType,
		"actor_token", own, "audience", idAgentB), 400, "invalid_request", "actor_token_type")
}

// TestTokenExchangeCLI: agentca token exchange, with the subject token
// on standard input or in a file; a refusal is one line and exit 1.
func TestTokenExchangeCLI(t *testing.T) {
	idp := newTestIdP(t)
	c := newExchangeCA(t, idp)
	c.start()
	dirA := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token(idAgentA), dirA, "--task", "trip-9"); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	user := filepath.Join(t.TempDir(), "user.jwt")
	writeFile(t, user, []byte(idp.sign(idp.userClaims(), nil)+"\n"))
	r := mustRun(t, "token", "exchange", "--ca", c.URL, "--out", dirA, "--subject-token-file", user,
		"--audience", idAgentB, "--scope", "tools.read")
	cl := jwtClaims(t, strings.TrimSpace(r.stdout))
	if cl["sub"] != "alice" || cl["task"] != "trip-9" || cl["act"].(map[string]any)["sub"] != idAgentA {
		t.Fatalf("token exchange printed a token with claims %v", cl)
	}
	bad := filepath.Join(t.TempDir(), "bad.jwt")
	writeFile(t, bad, []byte(idp.sign(map[string]any{"iss": idp.URL, "sub": "alice", "aud": "agentca-e2e",
		"exp": time.Now().Add(-time.Minute).Unix()}, nil)))
	r = runCLI(t, "token", "exchange", "--ca", c.URL, "--out", dirA, "--subject-token-file", bad, "--audience", idAgentB)
	if r.code != 1 || !strings.Contains(r.stderr, "invalid_request") || !strings.Contains(r.stderr, "expired") {
		t.Fatalf("an expired subject token:\n%s", r)
	}
	oneLine(t, r)
	if r := runCLI(t, "token", "exchange", "--ca", c.URL, "--out", dirA, "--audience", idAgentB); r.code != 2 {
		t.Fatalf("no subject token: exit %d\n%s", r.code, r)
	}
}

// TestTokenExchangeBadJWKSFileRefusesToStart: a trusted issuer whose
// JWKS file is missing or holds no key stops the daemon at start, one
// line naming the issuer.
func TestTokenExchangeBadJWKSFileRefusesToStart(t *testing.T) {
	c := newCA(t, caOptions{})
	writeFile(t, filepath.Join(c.Dir, "empty.json"), []byte(`{"keys": []}`))
	for _, file := range []string{"missing.json", "empty.json"} {
		c.editConfig(func(cfg map[string]any) {
			cfg["tokens"] = map[string]any{"scopes": []string{"tools.read"}, "exchange": map[string]any{"issuers": []map[string]any{
				{"issuer": "https://idp.example.org", "audience": "agentca", "jwks_file": file}}}}
		})
		r := runCLI(t, "serve", "--dir", c.Dir)
		if r.code != 1 || !strings.Contains(r.stderr, "https://idp.example.org") || !strings.Contains(r.stderr, file) {
			t.Fatalf("serve with jwks_file %s must exit 1 naming it:\n%s", file, r)
		}
		oneLine(t, r)
	}
}
