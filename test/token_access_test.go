package test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/wire"
)

// toolServerBin is examples/tool-server, built once per run.
var toolServerBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "agentca-e2e-tool-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tool-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/agentca/agentca/examples/tool-server").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building the tool server: %v\n%s", err, out)
	}
	return bin, nil
})

// newTokenCA is a CA whose token endpoint knows the tools scopes, with a
// policy that grants them (without one it issues no token).
func newTokenCA(t *testing.T) *testCA {
	t.Helper()
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) {
		cfg["tokens"] = map[string]any{"scopes": []string{"tools.read", "tools.write"}}
	})
	withPolicy(c, `{"rules": [{"name": "tools", "endpoints": ["token"], "when": "scope.all(s, s.startsWith('tools.'))", "effect": "allow"}]}`)
	return c
}

// TestTokenWithoutPolicyIsDenied: scopes configured but no policy: the
// token endpoint fails closed.
func TestTokenWithoutPolicyIsDenied(t *testing.T) {
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) {
		cfg["tokens"] = map[string]any{"scopes": []string{"tools.read"}}
	})
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	r := runCLI(t, "token", "get", "--ca", c.URL, "--out", dir, "--scope", "tools.read", "--resource", "https://tools.example.org")
	if r.code != 1 || !strings.Contains(r.stderr, "access_denied") || !strings.Contains(r.stderr, "no runtime policy") {
		t.Fatalf("a token without a policy:\n%s", r)
	}
}

// toolServer runs examples/tool-server for resource with credentials
// from the CA, and returns its URL.
func toolServer(t *testing.T, c *testCA, scope string) string {
	t.Helper()
	bin, err := toolServerBin()
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "tool")
	mustRun(t, "enroll", "--ca", c.URL, "--root", c.rootsFile(), "--token", c.token(toolID), "--out", creds)
	addr := freeAddr(t)
	url := "https://" + addr
	logPath := filepath.Join(t.TempDir(), "tool-server.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--ca", c.URL, "--root", c.rootsFile(), "--listen", addr, "--resource", url, "--scope", scope,
		"--creds", creds, "--status-max-age", "200ms", "--leeway", "0s")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("tool-server log:\n%s", b)
		}
	})
	eventually(t, 20*time.Second, 50*time.Millisecond, "the tool server to listen on "+addr, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return url
}

// tokenGet runs agentca token get and returns the access token.
func tokenGet(t *testing.T, c *testCA, out string, args ...string) string {
	t.Helper()
	r := mustRun(t, append([]string{"token", "get", "--ca", c.URL, "--out", out}, args...)...)
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token get printed %q", r.stdout)
	}
	return tok
}

// call is a request to the tool server with cert and token (either may
// be empty) over hc.
func call(t *testing.T, hc *http.Client, url, token string) apiResp {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/search", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: bytes.TrimSpace(b)}
}

// toolID is the tool server's SPIFFE ID.
const toolID = "spiffe://example.org/tool/search"

// toolClient presents cert (nil: none) to the tool server over one
// keep-alive connection, and checks that the server's certificate chains
// to the CA's roots and names toolID (a SPIFFE certificate names no host).
func toolClient(c *testCA, cert *tls.Certificate) *http.Client {
	roots := c.pool()
	conf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true,
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
			if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != toolID {
				return fmt.Errorf("the tool server is %v, not %s", certs[0].URIs, toolID)
			}
			return nil
		}}
	if cert != nil {
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, MaxIdleConnsPerHost: 1}}
}

func TestAccessTokensAgainstToolServer(t *testing.T) {
	c := newTokenCA(t)
	c.start()
	url := toolServer(t, c, "tools.read")
	const idA, idB = "spiffe://example.org/agent/a", "spiffe://example.org/agent/b"
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for id, dir := range map[string]string{idA: dirA, idB: dirB} {
		if r := c.enroll(c.token(id), dir); r.code != 0 {
			t.Fatalf("enroll %s:\n%s", id, r)
		}
	}
	a, b := readCreds(t, dirA), readCreds(t, dirB)
	hcA, hcB := toolClient(c, a.tlsCert()), toolClient(c, b.tlsCert())
	defer hcA.CloseIdleConnections()
	defer hcB.CloseIdleConnections()
	tokA := tokenGet(t, c, dirA, "--scope", "tools.read", "--resource", url)

	wantStatus := func(name string, r apiResp, status int) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s: status %d, want %d (%s, WWW-Authenticate %q)", name, r.status, status, r.body, r.header.Get("WWW-Authenticate"))
		}
		if status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", name, r.header.Get("WWW-Authenticate"))
		}
	}
	if r := call(t, hcA, url, tokA); r.status != 200 || string(r.body) != idA {
		t.Fatalf("A with A's token: %d %q, want 200 %s", r.status, r.body, idA)
	}
	wantStatus("B with A's stolen token", call(t, hcB, url, tokA), 401)
	wantStatus("A without a token", call(t, hcA, url, ""), 401)
	hcNone := toolClient(c, nil)
	defer hcNone.CloseIdleConnections()
	wantStatus("A's token without a certificate", call(t, hcNone, url, tokA), 401)
	other := tokenGet(t, c, dirA, "--scope", "tools.read", "--resource", "https://other.example.org")
	wantStatus("a token for another resource", call(t, hcA, url, other), 401)
	writeOnly := tokenGet(t, c, dirA, "--scope", "tools.write", "--resource", url)
	r := call(t, hcA, url, writeOnly)
	wantStatus("a token without tools.read", r, 403)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("missing scope: WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}

	// A's renewed certificate has A's SPIFFE ID: only the token's cnf
	// tells it from the certificate the token was issued for, so a
	// token of the old certificate must not work with the new one (nor
	// a token of the new one with the old).
	renewHC := c.client(a.tlsCert())
	defer renewHC.CloseIdleConnections()
	sr, renewedLeaf := wantIssued(t, postJSON(t, renewHC, c.URL+"/v1/renew", map[string]any{}))
	if got := renewedLeaf.URIs[0].String(); got != idA {
		t.Fatalf("renewed certificate for %s", got)
	}
	renewed := &tls.Certificate{Certificate: [][]byte{renewedLeaf.Raw, parseCerts(t, []byte(sr.Chain[0]))[0].Raw},
		PrivateKey: a.tlsCert().PrivateKey, Leaf: renewedLeaf}
	hcA2 := toolClient(c, renewed)
	defer hcA2.CloseIdleConnections()
	wantStatus("A's renewed certificate with the old certificate's token", call(t, hcA2, url, tokA), 401)
	renewedHC := c.client(renewed)
	defer renewedHC.CloseIdleConnections()
	tr := do(t, renewedHC, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded",
		strings.NewReader("grant_type=client_credentials&scope=tools.read&resource="+url))
	var tokA2 wire.AccessTokenResponse
	if err := json.Unmarshal(tr.body, &tokA2); err != nil || tr.status != 200 {
		t.Fatalf("token for the renewed certificate: %d %s", tr.status, tr.body)
	}
	if r := call(t, hcA2, url, tokA2.AccessToken); r.status != 200 || string(r.body) != idA {
		t.Fatalf("renewed certificate with its own token: %d %s", r.status, r.body)
	}
	wantStatus("A's old certificate with the renewed certificate's token", call(t, hcA, url, tokA2.AccessToken), 401)

	// A token of one second: accepted, then refused once it expired.
	short := tokenGet(t, c, dirA, "--scope", "tools.read", "--resource", url, "--ttl", "1s")
	if r := call(t, hcA, url, short); r.status != 200 {
		t.Logf("the one-second token was already refused (%d) on a slow machine", r.status)
	}
	eventually(t, 5*time.Second, 100*time.Millisecond, "the expired token to be refused", func() bool {
		return call(t, hcA, url, short).status == 401
	})

	// Revoking A voids its token within a second, on the same
	// keep-alive connection.
	if r := call(t, hcA, url, tokA); r.status != 200 {
		t.Fatalf("before revocation: %d", r.status)
	}
	mustRun(t, "revoke", "--ca", c.URL, "--out", dirA, "--reason", "keyCompromise")
	revoked := time.Now()
	eventually(t, 2*time.Second, 25*time.Millisecond, "A's token to be refused after revocation", func() bool {
		return call(t, hcA, url, tokA).status == 401
	})
	if took := time.Since(revoked); took > time.Second {
		t.Errorf("A's token was refused %s after the revocation, want within 1s", took)
	}
	// B is unaffected.
	tokB := tokenGet(t, c, dirB, "--scope", "tools.read", "--resource", url)
	if r := call(t, hcB, url, tokB); r.status != 200 || string(r.body) != idB {
		t.Errorf("B after A's revocation: %d %q", r.status, r.body)
	}
}

func TestTokenEndpointEndToEnd(t *testing.T) {
	c := newTokenCA(t)
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	// The metadata and the JWKS are published.
	hc := c.client(nil)
	defer hc.CloseIdleConnections()
	md := do(t, hc, http.MethodGet, c.URL+"/.well-known/oauth-authorization-server", "", nil)
	var meta map[string]any
	if err := json.Unmarshal(md.body, &meta); err != nil || meta["issuer"] != c.URL || meta["token_endpoint"] != c.URL+"/v1/token" {
		t.Fatalf("metadata %d %s", md.status, md.body)
	}
	if r := do(t, hc, http.MethodGet, c.URL+"/.well-known/jwks.json", "", nil); r.status != 200 || !strings.Contains(string(r.body), `"kid"`) {
		t.Fatalf("jwks %d %s", r.status, r.body)
	}
	// Errors are OAuth errors with one line on stderr from the CLI.
	r := runCLI(t, "token", "get", "--ca", c.URL, "--out", dir, "--scope", "tools.delete", "--resource", "https://tools.example.org")
	if r.code != 1 || !strings.Contains(r.stderr, "invalid_scope") {
		t.Fatalf("unknown scope:\n%s", r)
	}
	oneLine(t, r)
	noCert := do(t, hc, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded",
		strings.NewReader("grant_type=client_credentials&scope=tools.read&resource=https://tools.example.org"))
	if noCert.status != 401 || !strings.Contains(string(noCert.body), `"invalid_client"`) {
		t.Fatalf("no client certificate: %d %s", noCert.status, noCert.body)
	}
	// The token key lives beside the others, 0600.
	fi, err := os.Stat(filepath.Join(c.Dir, "keys", "token.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys/token.key: %v %v", fi, err)
	}
}

// TestTaskEnd: a certificate issued for a task, its token carrying the
// task, and `agentca task end` revoking it (and so voiding the token).
func TestTaskEnd(t *testing.T) {
	c := newTokenCA(t)
	c.start()
	hc := c.client(nil)
	defer hc.CloseIdleConnections()
	key := newECKey(t)
	body := signBody("join", c.token("spiffe://example.org/agent/tasked"), csrPEM(t, key, nil), "")
	body["task"] = "ticket-7"
	sr, leaf := wantIssued(t, postJSON(t, hc, c.URL+"/v1/sign", body))
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw, parseCerts(t, []byte(sr.Chain[0]))[0].Raw}, PrivateKey: key, Leaf: leaf}
	mtls := c.client(cert)
	defer mtls.CloseIdleConnections()
	form := "grant_type=client_credentials&scope=tools.read&resource=https://tools.example.org"
	tok := do(t, mtls, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if tok.status != 200 {
		t.Fatalf("token: %d %s", tok.status, tok.body)
	}
	var tr wire.AccessTokenResponse
	_ = json.Unmarshal(tok.body, &tr)
	claims := jwtClaims(t, tr.AccessToken)
	if claims["task"] != "ticket-7" {
		t.Errorf("token claims %v, want task ticket-7", claims)
	}
	r := mustRun(t, "task", "end", "--dir", c.Dir, "--json", "ticket-7")
	var out wire.TaskEndResponse
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Revoked) != 1 || normSerial(t, out.Revoked[0]) != leaf.SerialNumber.Text(16) {
		t.Fatalf("task end: %v\n%s", err, r)
	}
	after := do(t, mtls, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if after.status != 401 || !strings.Contains(string(after.body), "invalid_client") {
		t.Fatalf("token after task end: %d %s", after.status, after.body)
	}
	// The ended task gets no new certificate: not by enrolling for it...
	body = signBody("join", c.token("spiffe://example.org/agent/late"), csrPEM(t, newECKey(t), nil), "")
	body["task"] = "ticket-7"
	wantError(t, postJSON(t, hc, c.URL+"/v1/sign", body), http.StatusForbidden, "task_ended")
	// ... nor by renewing one of its certificates.
	if rr := postJSON(t, mtls, c.URL+"/v1/renew", map[string]any{}); rr.status != http.StatusForbidden {
		t.Fatalf("renewal after task end: %d %s", rr.status, rr.body)
	}
	if got := runCLI(t, "ocsp", "--cert", writeCert(t, leaf), "--issuer", writeCert(t, parseCerts(t, []byte(sr.Chain[0]))[0])); got.code == 0 {
		t.Errorf("OCSP says good after task end:\n%s", got)
	}

	// enroll --task: the CLI agent's certificate is recorded for the
	// task, and ending it revokes that certificate.
	tasked := filepath.Join(t.TempDir(), "tasked")
	if r := c.enroll(c.token("spiffe://example.org/agent/cli-tasked"), tasked, "--task", "ticket-9"); r.code != 0 {
		t.Fatalf("enroll --task:\n%s", r)
	}
	r = mustRun(t, "task", "end", "--dir", c.Dir, "--json", "ticket-9")
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Revoked) != 1 ||
		normSerial(t, out.Revoked[0]) != readCreds(t, tasked).leaf.SerialNumber.Text(16) {
		t.Fatalf("task end after enroll --task: %v\n%s", err, r)
	}

	// An admin ends a task over HTTPS with its certificate; others may not.
	body = signBody("join", c.token("spiffe://example.org/agent/tasked2"), csrPEM(t, newECKey(t), nil), "")
	body["task"] = "ticket-8"
	_, leaf2 := wantIssued(t, postJSON(t, hc, c.URL+"/v1/sign", body))
	ops := filepath.Join(t.TempDir(), "ops")
	if r := c.enroll(c.token("spiffe://example.org/admin/ops"), ops); r.code != 0 {
		t.Fatalf("enroll ops:\n%s", r)
	}
	notAdmin := runCLI(t, "task", "end", "--ca", c.URL, "--out", ops, "ticket-8")
	if notAdmin.code != 1 {
		t.Fatalf("a non-admin ended a task:\n%s", notAdmin)
	}
	c.stop()
	c.editConfig(func(cfg map[string]any) { cfg["admins"] = []string{"spiffe://example.org/admin/ops"} })
	c.start()
	r = mustRun(t, "task", "end", "--ca", c.URL, "--out", ops, "ticket-8")
	if !strings.Contains(r.stdout, "revoked 1 certificate") || !strings.Contains(r.stdout, leaf2.SerialNumber.Text(16)) {
		t.Errorf("task end over HTTPS:\n%s", r)
	}
}

func writeCert(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cert.pem")
	writeFile(t, p, certPEM(c))
	return p
}

// jwtClaims decodes a JWT's payload without verifying it (the unit tests
// verify signatures).
func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
