package test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/verify/oauth"
)

// peerTLS verifies a server by the CA's roots and its SPIFFE ID (agentca
// certificates name no host).
func peerTLS(c *testCA, id string) *tls.Config {
	roots := c.pool()
	return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				var err error
				if certs[i], err = x509.ParseCertificate(r); err != nil {
					return err
				}
			}
			inter := x509.NewCertPool()
			for _, ch := range certs[1:] {
				inter.AddCert(ch)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return err
			}
			if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != id {
				return fmt.Errorf("the server is %v, not %s", certs[0].URIs, id)
			}
			return nil
		}}
}

// TestTokenExchangeThroughTransports: the same chain with the Go
// libraries: agent A's TokenTransport exchanges alice's token for one to
// B; agent B, a service behind verify/oauth that accepts delegation,
// calls the tool with a TokenTransport whose SubjectToken is the token
// it received, so each hop's token is exchanged on the way.
func TestTokenExchangeThroughTransports(t *testing.T) {
	idp := newTestIdP(t)
	c := newExchangeCA(t, idp)
	c.start()
	tool := toolServer(t, c, "tools.read")
	a, b := agentCreds(t, c, idAgentA, "--task", "trip-7"), agentCreds(t, c, idAgentB)
	client, err := agent.NewClient(c.URL, c.pool())
	if err != nil {
		t.Fatal(err)
	}

	// Agent B: a service for idAgentB that calls the tool for its caller.
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: c.Roots, MaxCacheAge: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mw, err := oauth.New(oauth.Options{Verifier: v, Issuer: c.URL, Audience: idAgentB, Scopes: []string{"tools.read"},
		AllowDelegation: true, HTTPClient: c.client(nil)})
	if err != nil {
		t.Fatal(err)
	}
	trB := &agent.TokenTransport{CA: client, Certificate: func() *tls.Certificate { return b }, TLSConfig: peerTLS(c, toolID),
		Scope: []string{"tools.read"}, SubjectToken: func(r *http.Request) string {
			if cl := oauth.FromContext(r.Context()); cl != nil {
				return cl.Token
			}
			return ""
		}}
	defer trB.CloseIdleConnections()
	srvB := httptest.NewUnstartedServer(mw.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, tool+"/search", nil)
		resp, err := (&http.Client{Transport: trB, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})))
	srvB.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert, Certificates: []tls.Certificate{*b}}
	srvB.StartTLS()
	defer srvB.Close()

	// Agent A calls B for alice.
	user := idp.sign(idp.userClaims(), nil)
	trA := &agent.TokenTransport{CA: client, Certificate: func() *tls.Certificate { return a }, TLSConfig: peerTLS(c, idAgentB),
		Scope: []string{"tools.read"}, Audience: func(*http.Request) (string, error) { return idAgentB, nil },
		SubjectToken: func(*http.Request) string { return user }}
	defer trA.CloseIdleConnections()
	hc := &http.Client{Transport: trA, Timeout: 20 * time.Second}
	get := func() (int, string) {
		resp, err := hc.Get(srvB.URL + "/plan")
		if err != nil {
			return 0, err.Error() // the exchange was refused
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	want := idAgentB + "\nsub=alice act=" + idAgentB + " <- " + idAgentA
	for range 3 { // the second and third calls reuse the cached exchanged tokens
		if status, body := get(); status != 200 || body != want {
			t.Fatalf("A → B → tool: %d %q, want %q", status, body, want)
		}
	}
	// Ending the task: B refuses A's token (task status), within its
	// cache age.
	mustRun(t, "task", "end", "--dir", c.Dir, "trip-7")
	eventually(t, 10*time.Second, 100*time.Millisecond, "the chain to be refused after the task ended", func() bool {
		status, _ := get()
		return status == 401 || status == 502 || status == 0
	})
	// A SubjectToken function without a token for the request fails.
	trA.SubjectToken = func(*http.Request) string { return "" }
	if _, err := hc.Get(srvB.URL + "/plan"); err == nil || !strings.Contains(err.Error(), "no subject token") {
		t.Errorf("no subject token: %v", err)
	}
}
