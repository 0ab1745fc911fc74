// Package test holds agentca's end-to-end tests. They drive the real
// binary (built once in TestMain), real bbolt files in temporary
// directories, real HTTPS on 127.0.0.1 and the real openssl command. No
// part of the product is mocked.
package test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentca/agentca/wire"
)

// agentcaBin is the binary under test, built by TestMain.
var agentcaBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "agentca-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	agentcaBin = filepath.Join(dir, "agentca")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is not on PATH:", err)
		return 1
	}
	args := []string{"build", "-o", agentcaBin}
	// AGENTCA_E2E_RACE=1 builds the binary under test with the race
	// detector too (slower, but finds races in the daemon and the agent).
	if os.Getenv("AGENTCA_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/agentca/agentca/cmd/agentca")
	cmd := exec.Command(goCmd, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building agentca:", err)
		return 1
	}
	return m.Run()
}

// childEnv is the environment of every command the tests start: the
// test's own, without AGENTCA_* variables that would change flags.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTCA_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is how one CLI run ended.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("agentca %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runCLI runs the binary to completion (at most a minute).
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentcaBin, args...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("running agentca %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("agentca %v did not finish within a minute", args)
	}
	return r
}

// mustRun runs the CLI and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := runCLI(t, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// oneLine checks the contract for failures: exactly one non-empty line on
// stderr.
func oneLine(t *testing.T, r result) {
	t.Helper()
	s := strings.TrimSuffix(r.stderr, "\n")
	if s == "" || strings.Contains(s, "\n") {
		t.Errorf("want exactly one line on stderr, got %q\n%s", r.stderr, r)
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// eventually polls cond every interval until it returns true or timeout
// passes, then fails the test with what.
func eventually(t *testing.T, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// waitUntil blocks until the wall clock passes at (polling the clock).
func waitUntil(at time.Time) {
	for time.Now().Before(at) {
		time.Sleep(min(100*time.Millisecond, time.Until(at)+time.Millisecond))
	}
}

// ---------------------------------------------------------------------
// Processes: the daemon and the agent daemon.

// proc is a long-running agentca process whose stderr goes to a file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // from Wait, valid after done
	stopped bool
}

// startProc starts agentca with args; its stderr (and stdout) go to
// logPath, which is printed in the test log if the test fails. A cleanup
// stops it with SIGTERM and requires exit status 0 if the test did not
// stop it itself.
func startProc(t *testing.T, name, logPath string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentcaBin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.stopped {
			p.stop(t)
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// stop sends SIGTERM and requires exit status 0 within 30 s.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.stopped = true
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within 30s of SIGTERM\n%s log:\n%s", p.name, p.name, p.log())
		return
	}
	if p.err != nil {
		t.Errorf("%s: want exit status 0 after SIGTERM, got %v\n%s log:\n%s", p.name, p.err, p.name, p.log())
	}
}

// ---------------------------------------------------------------------
// A CA under test.

type caOptions struct {
	// keyType is agentca init --key-type; empty means the default.
	keyType string
	// leaf sets fields of agentca.json's "leaf" object after init, e.g.
	// {"min_ttl": "2s"}.
	leaf map[string]string
	// trustDomain is agentca init --trust-domain; empty means example.org.
	trustDomain string
}

type testCA struct {
	t           *testing.T
	base        string // t.TempDir() holding the CA dir and logs
	Dir         string
	HTTPS, HTTP string // host:port
	URL         string // https://HTTPS
	RootsPEM    []byte
	Roots       []*x509.Certificate
	Fingerprint string // as printed by init
	TrustDomain string

	mu     sync.Mutex
	proc   *proc
	starts int // starts on the current ports
	logs   int // serve-N.log files
}

var fingerprintLine = regexp.MustCompile(`(?m)^Root fingerprint \(SHA-256\): ([0-9a-f]{64})$`)

// newCA runs agentca init in a new temporary directory on free loopback
// ports and applies opts to agentca.json. It does not start the daemon.
func newCA(t *testing.T, opts caOptions) *testCA {
	t.Helper()
	base := t.TempDir()
	c := &testCA{t: t, base: base, Dir: filepath.Join(base, "ca"), HTTPS: freeAddr(t), HTTP: freeAddr(t), TrustDomain: "example.org"}
	if opts.trustDomain != "" {
		c.TrustDomain = opts.trustDomain
	}
	c.URL = "https://" + c.HTTPS
	args := []string{"init", "--dir", c.Dir, "--trust-domain", c.TrustDomain, "--https", c.HTTPS, "--http", c.HTTP}
	if opts.keyType != "" {
		args = append(args, "--key-type", opts.keyType)
	}
	r := mustRun(t, args...)
	m := fingerprintLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("init did not print the root fingerprint:\n%s", r)
	}
	c.Fingerprint = m[1]
	if len(opts.leaf) > 0 {
		c.editConfig(func(cfg map[string]any) {
			leaf, ok := cfg["leaf"].(map[string]any)
			if !ok {
				t.Fatalf("agentca.json has no leaf object: %v", cfg)
			}
			for k, v := range opts.leaf {
				leaf[k] = v
			}
		})
	}
	var err error
	c.RootsPEM, err = os.ReadFile(filepath.Join(c.Dir, "roots.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c.Roots = parseCerts(t, c.RootsPEM)
	return c
}

// editConfig rewrites agentca.json through edit.
func (c *testCA) editConfig(edit func(map[string]any)) {
	c.t.Helper()
	path := filepath.Join(c.Dir, "agentca.json")
	b, err := os.ReadFile(path)
	if err != nil {
		c.t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		c.t.Fatalf("agentca.json: %v", err)
	}
	edit(cfg)
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// rootsFile is the path of the CA's roots.pem.
func (c *testCA) rootsFile() string { return filepath.Join(c.Dir, "roots.pem") }

func (c *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.Roots {
		p.AddCert(r)
	}
	return p
}

// start runs agentca serve and waits until GET /health answers over
// HTTPS (trusting roots.pem). Its stderr is printed if the test fails; a
// cleanup stops it with SIGTERM and requires exit 0.
//
// The ports were free when newCA picked them, but any outgoing connection
// on the machine may have taken one since as its ephemeral port. When the
// daemon cannot bind, a first start moves to new ports; a restart (which
// must keep its ports) tries again for a while.
func (c *testCA) start() {
	t := c.t
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 1; ; attempt++ {
		p := c.startOnce()
		if p == nil {
			return
		}
		if !strings.Contains(p.log(), "address already in use") || time.Now().After(deadline) {
			t.Fatalf("agentca serve exited early (%v):\n%s", p.err, p.log())
		}
		t.Logf("agentca serve could not bind %s / %s (attempt %d); retrying", c.HTTPS, c.HTTP, attempt)
		if c.starts == 1 {
			c.HTTPS, c.HTTP = freeAddr(t), freeAddr(t)
			c.URL = "https://" + c.HTTPS
			c.editConfig(func(cfg map[string]any) {
				cfg["listen"] = map[string]any{"https": c.HTTPS, "http": c.HTTP}
				cfg["public_urls"] = map[string]any{"https": c.URL, "http": "http://" + c.HTTP}
			})
			c.starts = 0
		} else {
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// startOnce starts the daemon and waits for /health. It returns nil when
// the daemon is up, or the process if it exited first.
func (c *testCA) startOnce() *proc {
	t := c.t
	t.Helper()
	c.mu.Lock()
	c.starts++
	c.logs++
	logPath := filepath.Join(c.base, fmt.Sprintf("serve-%d.log", c.logs))
	c.mu.Unlock()
	p := startProc(t, "agentca serve", logPath, "serve", "--dir", c.Dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agentca serve stderr (%s):\n%s", logPath, p.log())
		}
	})
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	hc := c.client(nil)
	hc.Timeout = 2 * time.Second
	defer hc.CloseIdleConnections()
	exited := false
	eventually(t, 30*time.Second, 50*time.Millisecond, "agentca serve to answer /health on "+c.HTTPS, func() bool {
		if p.exited() {
			exited = true
			return true
		}
		resp, err := hc.Get(c.URL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	if exited {
		p.stopped = true // exited on its own; nothing to stop
		return p
	}
	return nil
}

// stop sends SIGTERM to the daemon and requires exit status 0.
func (c *testCA) stop() {
	c.t.Helper()
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	p.stop(c.t)
}

// client returns an HTTPS client that trusts the CA's roots and presents
// cert (nil: no client certificate).
func (c *testCA) client(cert *tls.Certificate) *http.Client {
	conf := &tls.Config{RootCAs: c.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
}

// token creates a join token through the admin socket.
func (c *testCA) token(spiffeID string, extra ...string) string {
	c.t.Helper()
	r := mustRun(c.t, append([]string{"token", "create", "--dir", c.Dir, "--spiffe-id", spiffeID}, extra...)...)
	tok := strings.TrimSpace(r.stdout)
	if tok == "" || strings.Contains(tok, "\n") {
		c.t.Fatalf("token create printed %q", r.stdout)
	}
	return tok
}

// tokenJSON creates a join token and returns it with its expiry.
func (c *testCA) tokenJSON(spiffeID string, extra ...string) (string, time.Time) {
	c.t.Helper()
	r := mustRun(c.t, append([]string{"token", "create", "--dir", c.Dir, "--spiffe-id", spiffeID, "--json"}, extra...)...)
	var out wire.TokenResponse
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Tokens) != 1 {
		c.t.Fatalf("token create --json: %v\n%s", err, r)
	}
	return out.Tokens[0].Token, out.Tokens[0].ExpiresAt
}

// enroll runs agentca enroll with --root roots.pem.
func (c *testCA) enroll(token, out string, extra ...string) result {
	c.t.Helper()
	return runCLI(c.t, append([]string{"enroll", "--ca", c.URL, "--root", c.rootsFile(), "--token", token, "--out", out}, extra...)...)
}

// certs lists what the CA issued for spiffeID (`agentca certs list --json`).
func (c *testCA) certs(spiffeID string) []wire.CertInfo {
	c.t.Helper()
	r := mustRun(c.t, "certs", "list", "--dir", c.Dir, "--json", "--spiffe-id", spiffeID)
	var out []wire.CertInfo
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		c.t.Fatalf("certs list --json: %v\n%s", err, r)
	}
	return out
}

// ---------------------------------------------------------------------
// HTTP.

// apiResp is one HTTP answer.
type apiResp struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request; contentType may be empty.
func do(t *testing.T, hc *http.Client, method, url, contentType string, body io.Reader) apiResp {
	t.Helper()
	r, err := tryDo(hc, method, url, contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryDo is do for goroutines other than the test's: it returns its error.
func tryDo(hc *http.Client, method, url, contentType string, body io.Reader) (apiResp, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return apiResp{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return apiResp{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return apiResp{}, fmt.Errorf("%s %s: reading body: %w", method, url, err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func postJSON(t *testing.T, hc *http.Client, url string, v any) apiResp {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, hc, http.MethodPost, url, "application/json", bytes.NewReader(b))
}

// wantError checks r is an error with status and code, with a JSON body
// holding exactly a non-empty "error" and "message", and returns it.
func wantError(t *testing.T, r apiResp, status int, code string) wire.Error {
	t.Helper()
	if r.status != status {
		t.Errorf("want status %d, got %d: %s", status, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type %q, want application/json (body %q)", ct, r.body)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Errorf("error body is not JSON: %v: %q", err, r.body)
		return wire.Error{}
	}
	var e wire.Error
	_ = json.Unmarshal(r.body, &e)
	if e.Code != code {
		t.Errorf("want error code %q, got %q (body %s)", code, e.Code, r.body)
	}
	if e.Message == "" {
		t.Errorf("error body has no message: %s", r.body)
	}
	for k := range raw {
		if k != "error" && k != "message" {
			t.Errorf("error body has unexpected field %q: %s", k, r.body)
		}
	}
	return e
}

// wantIssued checks r is a 201 SignResponse and returns it with the leaf.
func wantIssued(t *testing.T, r apiResp) (*wire.SignResponse, *x509.Certificate) {
	t.Helper()
	if r.status != http.StatusCreated {
		t.Fatalf("want 201, got %d: %s", r.status, r.body)
	}
	var sr wire.SignResponse
	if err := json.Unmarshal(r.body, &sr); err != nil {
		t.Fatalf("sign response: %v: %s", err, r.body)
	}
	certs := parseCerts(t, []byte(sr.Certificate))
	if len(certs) != 1 {
		t.Fatalf("certificate field holds %d certificates", len(certs))
	}
	leaf := certs[0]
	if normSerial(t, sr.Serial) != leaf.SerialNumber.Text(16) {
		t.Errorf("serial field %q does not match the certificate's %x", sr.Serial, leaf.SerialNumber)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != sr.SPIFFEID {
		t.Errorf("spiffe_id field %q does not match the certificate's URIs %v", sr.SPIFFEID, leaf.URIs)
	}
	return &sr, leaf
}

// signBody is a /v1/sign request.
func signBody(provisioner, token, csr, ttl string) map[string]string {
	m := map[string]string{"provisioner": provisioner, "token": token, "csr": csr}
	if ttl != "" {
		m["ttl"] = ttl
	}
	return m
}

// ---------------------------------------------------------------------
// Keys, CSRs and certificates.

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrDER makes a CSR with tmpl (nil: empty) for key.
func csrDER(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func csrPEM(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) string {
	t.Helper()
	return pemCSR(csrDER(t, key, tmpl))
}

func pemCSR(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// p224CSR builds, by hand, a CSR for an ECDSA P-224 key signed with
// ECDSA-SHA256 (crypto/x509 refuses to sign with P-224).
func p224CSR(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	type tbs struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}
	tbsDER, err := asn1.Marshal(tbs{Subject: asn1.RawValue{FullBytes: []byte{0x30, 0}}, PublicKey: asn1.RawValue{FullBytes: spki}})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(tbsDER)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	type algo struct{ Algorithm asn1.ObjectIdentifier }
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm algo
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbsDER}, algo{asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("hand-made P-224 CSR does not parse: %v", err)
	}
	if err := parsed.CheckSignature(); err != nil {
		t.Fatalf("hand-made P-224 CSR does not verify: %v", err)
	}
	return pemCSR(der)
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// parseCerts parses every CERTIFICATE block of PEM data, refusing
// anything else.
func parseCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("trailing data after the PEM blocks: %q", rest)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", data)
	}
	return out
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// normSerial turns a hex serial as printed by agentca into big.Int's hex.
func normSerial(t *testing.T, s string) string {
	t.Helper()
	n, ok := new(big.Int).SetString(strings.ReplaceAll(s, ":", ""), 16)
	if !ok {
		t.Fatalf("serial %q is not hex", s)
	}
	return n.Text(16)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// creds is what enroll writes into its --out directory.
type creds struct {
	leaf    *x509.Certificate
	chain   []*x509.Certificate // after the leaf in cert.pem
	key     crypto.Signer
	bundle  []*x509.Certificate
	certRaw []byte
	keyMode os.FileMode
}

// readCreds reads cert.pem, key.pem and bundle.pem from dir and checks
// that the key matches the leaf.
func readCreds(t *testing.T, dir string) *creds {
	t.Helper()
	c, err := loadCreds(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loadCreds is readCreds returning its error.
func loadCreds(dir string) (*creds, error) {
	certRaw, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, "key.pem")
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, err
	}
	keyRaw, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	bundleRaw, err := os.ReadFile(filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsErr(certRaw)
	if err != nil {
		return nil, fmt.Errorf("cert.pem: %w", err)
	}
	bundle, err := parseCertsErr(bundleRaw)
	if err != nil {
		return nil, fmt.Errorf("bundle.pem: %w", err)
	}
	kb, rest := pem.Decode(keyRaw)
	if kb == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("key.pem is not exactly one PEM block: %q", keyRaw)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key.pem (%s): %w", kb.Type, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key.pem holds a %T", k)
	}
	c := &creds{leaf: certs[0], chain: certs[1:], key: signer, bundle: bundle, certRaw: certRaw, keyMode: fi.Mode().Perm()}
	if !keyMatches(certs[0], signer) {
		return c, fmt.Errorf("key.pem does not match the leaf in cert.pem (serial %x)", certs[0].SerialNumber)
	}
	return c, nil
}

func parseCertsErr(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

func keyMatches(c *x509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := c.PublicKey.(equaler)
	return ok && e.Equal(key.Public())
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// tlsCert turns creds into a client certificate (leaf + chain).
func (c *creds) tlsCert() *tls.Certificate {
	der := [][]byte{c.leaf.Raw}
	for _, ch := range c.chain {
		der = append(der, ch.Raw)
	}
	return &tls.Certificate{Certificate: der, PrivateKey: c.key, Leaf: c.leaf}
}

// verifyLeaf checks that leaf chains to roots through chain for client
// and server authentication.
func verifyLeaf(t *testing.T, leaf *x509.Certificate, chain []*x509.Certificate, roots *x509.CertPool) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("leaf %x does not verify for EKU %v: %v", leaf.SerialNumber, eku, err)
		}
	}
}

// spiffeIDOf returns the leaf's only URI SAN, failing otherwise.
func spiffeIDOf(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	if len(c.URIs) != 1 {
		t.Fatalf("certificate %x has %d URI SANs, want 1: %v", c.SerialNumber, len(c.URIs), c.URIs)
	}
	return c.URIs[0].String()
}

// requireOpenSSL fails (not skips) the test when openssl is missing.
func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("the end-to-end tests need the openssl command (make deps installs it): %v", err)
	}
	return p
}
