package agent_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/verify/oauth"
)

// withScopes configures the tools.read scope and a policy that grants
// it (without a policy the token endpoint issues nothing).
func withScopes(t *testing.T) func(*config.Config) {
	path := filepath.Join(t.TempDir(), "policy.json")
	rules := `{"rules": [{"name": "tools", "endpoints": ["token"], "when": "true", "effect": "allow"}]}`
	if err := os.WriteFile(path, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.Tokens.Scopes = []string{"tools.read"}
		c.Policy.File = path
	}
}

// toolService is an HTTPS service behind the oauth middleware that
// answers with the caller's SPIFFE ID.
func toolService(t *testing.T, ca *testca.CA, scope string) *httptest.Server {
	t.Helper()
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots, MaxCacheAge: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	ts := httptest.NewUnstartedServer(nil)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	mw, err := oauth.New(oauth.Options{Verifier: v, Issuer: ca.URL, Audience: ts.URL, Scopes: []string{scope},
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, oauth.FromContext(r.Context()).SPIFFEID)
	}))
	return ts
}

func enrollCreds(t *testing.T, ca *testca.CA, client *agent.Client, id string) *agent.Credentials {
	t.Helper()
	key, err := agent.NewKey("ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	cr, err := client.Sign(context.Background(), "join", ca.Token(t, id), key, 0)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

func TestTokenTransport(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: withScopes(t)})
	client, err := agent.NewClient(ca.URL, ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	const id = "spiffe://example.org/agent/tt"
	var cur atomic.Pointer[agent.Credentials]
	cur.Store(enrollCreds(t, ca, client, id))
	svc := toolService(t, ca, "tools.read")
	roots := ca.Pool.Clone()
	roots.AddCert(svc.Certificate())
	tr := &agent.TokenTransport{CA: client, RootCAs: roots, Scope: []string{"tools.read"},
		Certificate: func() *tls.Certificate { return cur.Load().TLSCertificate() }}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	get := func() (int, string) {
		t.Helper()
		resp, err := hc.Get(svc.URL + "/run")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 3 {
		if code, body := get(); code != 200 || body != id {
			t.Fatalf("%d %q, want 200 %s", code, body, id)
		}
	}
	// A renewal: the next request presents the new certificate with a
	// token bound to it.
	renewed, err := client.Renew(context.Background(), cur.Load().TLSCertificate(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(renewed)
	if code, body := get(); code != 200 || body != id {
		t.Fatalf("after renewal: %d %q", code, body)
	}
}

func TestTokenErrors(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: withScopes(t)})
	client, err := agent.NewClient(ca.URL, ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	cr := enrollCreds(t, ca, client, "spiffe://example.org/agent/te")
	tok, err := client.Token(context.Background(), cr.TLSCertificate(), agent.TokenRequest{Scope: []string{"tools.read"}, Resource: []string{"https://tools.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(tok.Expiry); left < 4*time.Minute || tok.Scope != "tools.read" {
		t.Errorf("token expires in %s with scope %q", left, tok.Scope)
	}
	_, err = client.Token(context.Background(), cr.TLSCertificate(), agent.TokenRequest{Scope: []string{"tools.delete"}, Resource: []string{"https://tools.example.org"}})
	var te *agent.TokenError
	if !errors.As(err, &te) || te.Code != "invalid_scope" || te.Status != 400 {
		t.Fatalf("unknown scope: %v", err)
	}
}
