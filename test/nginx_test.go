package test

// nginx as a relying service (docs/relying-services.md): the test runs the
// configurations of that document as written, with only the paths, ports,
// the CA URL and the upstream replaced, against a real nginx started as a
// child process with its own prefix in a temporary directory.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// requireNginx fails (not skips) the test when nginx is missing.
func requireNginx(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			return "/usr/sbin/nginx"
		}
		t.Fatalf("the nginx tests need nginx (the Debian package nginx; make deps installs it): %v", err)
	}
	return p
}

// docBlock returns the code block of docs/relying-services.md whose first
// line is "# file: name", without that line.
func docBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "relying-services.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	marker := "# file: " + name + "\n"
	i := strings.Index(doc, marker)
	if i < 0 {
		t.Fatalf("docs/relying-services.md has no block %q", marker)
	}
	// A script keeps its shebang line.
	start := strings.LastIndex(doc[:i], "```")
	start += strings.Index(doc[start:], "\n") + 1
	end := strings.Index(doc[i:], "\n```")
	if end < 0 {
		t.Fatalf("block %q is not closed", name)
	}
	return strings.Replace(doc[start:i+end+1], marker, "", 1)
}

// nginxServer is one nginx with its own prefix in a temporary directory.
type nginxServer struct {
	t     *testing.T
	bin   string
	dir   string // prefix: nginx.conf, nginx.pid, the temp paths
	ports map[string]string
	cmd   *exec.Cmd
	out   *lockedWriter // nginx's stderr (-e stderr) and stdout
	done  chan struct{}
}

// nginxFiles is the stand-in for /etc/nginx/agentca/ of the document.
type nginxFiles struct {
	dir      string
	caHTTP   string // http://host:port of the CA
	upstream string // http://host:port
}

// render applies the test's replacements to a block of the document.
func (f *nginxFiles) render(block string, ports map[string]string) string {
	pairs := []string{"/etc/nginx/agentca/", f.dir + "/", "http://127.0.0.1:8080", f.caHTTP, "http://127.0.0.1:9000", f.upstream}
	for doc, port := range ports {
		pairs = append(pairs, "listen "+doc+" ssl;", "listen 127.0.0.1:"+port+" ssl;")
	}
	return strings.NewReplacer(pairs...).Replace(block)
}

// startNginx runs nginx (master and one worker, in the foreground) with
// the given blocks of the document as its servers.
func startNginx(t *testing.T, files *nginxFiles, blocks ...string) *nginxServer {
	t.Helper()
	n := &nginxServer{t: t, bin: requireNginx(t), dir: t.TempDir(), ports: map[string]string{}}
	var servers strings.Builder
	for _, name := range blocks {
		block := docBlock(t, name)
		for _, line := range strings.Split(block, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "listen" && f[2] == "ssl;" {
				_, port, err := net.SplitHostPort(freeAddr(t))
				if err != nil {
					t.Fatal(err)
				}
				n.ports[f[1]] = port
			}
		}
		servers.WriteString(files.render(block, n.ports))
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers read the temporary directories
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
%s
pid %[2]s/nginx.pid;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
}
`, user, n.dir, servers.String())
	writeFile(t, filepath.Join(n.dir, "nginx.conf"), []byte(conf))
	n.out = &lockedWriter{}
	n.cmd = exec.Command(n.bin, n.args()...)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting nginx: %v", err)
	}
	n.done = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Signal(os.Interrupt) // SIGINT: fast shutdown
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("nginx stderr:\n%s", n.log())
		}
	})
	for doc, port := range n.ports {
		eventually(t, 10*time.Second, 20*time.Millisecond, "nginx to listen on "+doc, func() bool {
			select {
			case <-n.done:
				t.Fatalf("nginx exited:\n%s", n.log())
			default:
			}
			c, err := net.Dial("tcp", "127.0.0.1:"+port)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return n
}

func (n *nginxServer) args() []string {
	return []string{"-p", n.dir + "/", "-c", filepath.Join(n.dir, "nginx.conf"), "-e", "stderr"}
}

func (n *nginxServer) log() string {
	n.out.mu.Lock()
	defer n.out.mu.Unlock()
	return n.out.buf.String()
}

// url is the https URL of the server block that listens on docPort in
// the document.
func (n *nginxServer) url(docPort string) string {
	return "https://127.0.0.1:" + n.ports[docPort] + "/"
}

// reloadCommand is `nginx -s reload` for this instance.
func (n *nginxServer) reloadCommand() string {
	return n.bin + " " + strings.Join(n.args(), " ") + " -s reload"
}

// lockedWriter serialises writes to the buffer nginx's output goes to.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// spiffeID is the upstream's code of docs/relying-services.md: the
// SPIFFE ID of the certificate nginx verified.
func spiffeID(r *http.Request) (string, error) {
	if r.Header.Get("X-Client-Verify") != "SUCCESS" {
		return "", errors.New("no verified client certificate")
	}
	p, err := url.QueryUnescape(r.Header.Get("X-Client-Cert"))
	if err != nil {
		return "", err
	}
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		return "", errors.New("no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", err
	}
	if len(cert.URIs) != 1 {
		return "", errors.New("not an X.509-SVID")
	}
	return cert.URIs[0].String(), nil // authorise on this
}

// spiffeIDFromDER is spiffeID for HAProxy's header (base64 DER).
func spiffeIDFromDER(h string) (string, error) {
	der, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", err
	}
	if len(cert.URIs) != 1 {
		return "", errors.New("not an X.509-SVID")
	}
	return cert.URIs[0].String(), nil
}

// upstream is the service behind nginx: it answers with the SPIFFE ID it
// received and counts its requests.
func upstream(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		id, err := spiffeID(r)
		if der := r.Header.Get("X-Client-Cert-DER"); der != "" {
			id, err = spiffeIDFromDER(der)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, id)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// nginxAgent is an enrolled agent.
type nginxAgent struct {
	id    string
	dir   string
	creds *creds
}

func enrollAgent(t *testing.T, c *testCA, id string) *nginxAgent {
	t.Helper()
	out := filepath.Join(t.TempDir(), "agent")
	if r := c.enroll(c.token(id), out); r.code != 0 {
		t.Fatalf("enroll %s: %s", id, r)
	}
	return &nginxAgent{id: id, dir: out, creds: readCreds(t, out)}
}

// callNginx makes one request through a new connection with the agent's
// certificate; it returns the status and body.
func callNginx(t *testing.T, u string, a *nginxAgent) (int, string) {
	t.Helper()
	code, body, err := tryCall(u, a)
	if err != nil {
		t.Fatalf("GET %s as %s: %v", u, a.id, err)
	}
	return code, body
}

// tryCall is callNginx returning the error.
func tryCall(u string, a *nginxAgent) (int, string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the server's own certificate is not what is tested here
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return a.creds.tlsCert(), nil
		},
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// nginxCA starts a CA whose OCSP responses are valid 3 s (so nginx's OCSP
// cache follows a revocation within 3 s) and writes roots.pem and nginx's
// own certificate into files.dir.
func nginxCA(t *testing.T) (*testCA, *nginxFiles, *atomic.Int64) {
	t.Helper()
	requireNginx(t)
	requireOpenSSL(t)
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) { cfg["ocsp"] = map[string]any{"validity": "3s"} })
	c.start()
	up, hits := upstream(t)
	files := &nginxFiles{dir: t.TempDir(), caHTTP: "http://" + c.HTTP, upstream: up.URL}
	if err := os.Chmod(files.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := enrollAgent(t, c, "spiffe://example.org/nginx")
	writeFile(t, filepath.Join(files.dir, "roots.pem"), c.RootsPEM)
	writeFile(t, filepath.Join(files.dir, "server.pem"), srv.creds.certRaw)
	key, err := os.ReadFile(filepath.Join(srv.dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(files.dir, "server.key"), key)
	return c, files, hits
}

// wantAccepted requires a 200 from the upstream with the agent's ID.
func wantAccepted(t *testing.T, u string, a *nginxAgent) {
	t.Helper()
	code, body := callNginx(t, u, a)
	if code != http.StatusOK || body != a.id {
		t.Fatalf("%s as %s: got %d %q, want 200 %q", u, a.id, code, body, a.id)
	}
}

// refused reports whether nginx refused the agent (400 "The SSL
// certificate error", without reaching the upstream).
func nginxRefused(t *testing.T, u string, a *nginxAgent, hits *atomic.Int64) bool {
	t.Helper()
	before := hits.Load()
	code, body := callNginx(t, u, a)
	if code == http.StatusOK {
		return false
	}
	if code != http.StatusBadRequest || !strings.Contains(body, "certificate") || hits.Load() != before {
		t.Fatalf("%s as %s: got %d %q (upstream hits %d → %d), want nginx's 400 certificate error", u, a.id, code, body, before, hits.Load())
	}
	return true
}

// TestNginxOCSP: nginx with `ssl_ocsp on` (every certificate of the
// chain: the issuing CA's status comes from the root's responder) and with
// `ssl_ocsp leaf` accepts a valid agent, passes its SPIFFE ID to the
// upstream, refuses an agent of another CA, and refuses a revoked agent
// within the OCSP validity (3 s here) of the revocation; it staples a good
// OCSP response for its own agentca certificate.
func TestNginxOCSP(t *testing.T) {
	t.Parallel()
	c, files, hits := nginxCA(t)
	other := newCA(t, caOptions{trustDomain: "other.example"})
	other.start()
	good := enrollAgent(t, c, "spiffe://example.org/agent/good")
	bad := enrollAgent(t, c, "spiffe://example.org/agent/bad")
	stranger := enrollAgent(t, other, "spiffe://other.example/agent/stranger")

	n := startNginx(t, files, "mtls-ocsp.conf", "mtls-ocsp-leaf.conf", "stapling.conf")
	chain, leaf := n.url("8443"), n.url("8444")
	for _, u := range []string{chain, leaf} {
		wantAccepted(t, u, good)
		wantAccepted(t, u, bad)
		if !nginxRefused(t, u, stranger, hits) {
			t.Fatalf("%s accepted an agent of another CA", u)
		}
	}
	if strings.Contains(n.log(), "no OCSP responder URL") {
		t.Fatalf("nginx found no OCSP responder URL:\n%s", n.log())
	}

	mustRun(t, "revoke", "--dir", c.Dir, "--serial", bad.creds.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	revokedAt := time.Now()
	for _, u := range []string{chain, leaf} {
		eventually(t, 8*time.Second, 200*time.Millisecond, "nginx to refuse the revoked agent at "+u, func() bool {
			return nginxRefused(t, u, bad, hits)
		})
		wantAccepted(t, u, good)
	}
	if d := time.Since(revokedAt); d > 3*time.Second+3*time.Second {
		t.Errorf("the revocation took %s to show in nginx, want within the OCSP validity (3s)", d)
	}
	if !strings.Contains(n.log(), "verify error: certificate revoked") {
		t.Errorf("nginx did not log the revoked status:\n%s", n.log())
	}

	t.Run("stapling", func(t *testing.T) {
		wantStapledGood(t, n.url("8446"), c)
	})
}

// wantStapledGood connects to nginx until it staples an OCSP response
// (it fetches one at the first handshake) and checks it says good for its
// certificate, signed for the issuing CA.
func wantStapledGood(t *testing.T, u string, c *testCA) {
	t.Helper()
	host := strings.TrimSuffix(strings.TrimPrefix(u, "https://"), "/")
	var staple []byte
	var cs tls.ConnectionState
	eventually(t, 10*time.Second, 100*time.Millisecond, "nginx to staple an OCSP response", func() bool {
		conn, err := tls.Dial("tcp", host, &tls.Config{RootCAs: c.pool(), InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cs = conn.ConnectionState()
		staple = cs.OCSPResponse
		return len(staple) > 0
	})
	if len(cs.PeerCertificates) < 2 {
		t.Fatalf("nginx sent %d certificates, want the leaf and its issuing CA", len(cs.PeerCertificates))
	}
	leaf, iss := cs.PeerCertificates[0], cs.PeerCertificates[1]
	inter := x509.NewCertPool()
	inter.AddCert(iss)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("nginx's certificate does not chain to the CA: %v", err)
	}
	resp, err := ocsp.ParseResponseForCert(staple, leaf, iss)
	if err != nil {
		t.Fatalf("stapled response: %v", err)
	}
	if resp.Status != ocsp.Good || resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("stapled response: status %d for serial %x, want good for %x", resp.Status, resp.SerialNumber, leaf.SerialNumber)
	}
}

// crlRefresher returns a function running the document's refresh script
// for the CRLs named by a's certificates (its issuing CA's and root's),
// into crlFile ("" is the script's default), with the reload command it
// is given.
func crlRefresher(t *testing.T, files *nginxFiles, a *nginxAgent, crlFile string) func(reload string) {
	t.Helper()
	iss := a.creds.chain[0]
	if len(a.creds.leaf.CRLDistributionPoints) != 1 || len(iss.CRLDistributionPoints) != 1 {
		t.Fatalf("CRL distribution points: leaf %v, issuing CA %v; want one each", a.creds.leaf.CRLDistributionPoints, iss.CRLDistributionPoints)
	}
	urls := a.creds.leaf.CRLDistributionPoints[0] + " " + iss.CRLDistributionPoints[0]
	script := filepath.Join(t.TempDir(), "agentca-crl-refresh")
	writeFile(t, script, []byte(files.render(docBlock(t, "agentca-crl-refresh"), nil)))
	return func(reload string) {
		t.Helper()
		cmd := exec.Command("sh", script)
		cmd.Env = append(os.Environ(), "CRL_URLS="+urls, "RELOAD="+reload)
		if crlFile != "" {
			cmd.Env = append(cmd.Env, "CRL_FILE="+crlFile)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("agentca-crl-refresh: %v\n%s", err, out)
		}
	}
}

// TestNginxCRL: nginx with ssl_crl (checked for every certificate of the
// chain, so the file holds the issuing CA's and the root's CRLs) accepts
// a valid agent, refuses one of another CA, and refuses a revoked agent
// once the documented refresh script has fetched the CRLs again and
// reloaded nginx.
func TestNginxCRL(t *testing.T) {
	t.Parallel()
	c, files, hits := nginxCA(t)
	other := newCA(t, caOptions{trustDomain: "other.example"})
	other.start()
	good := enrollAgent(t, c, "spiffe://example.org/agent/good")
	bad := enrollAgent(t, c, "spiffe://example.org/agent/bad")
	stranger := enrollAgent(t, other, "spiffe://other.example/agent/stranger")

	refresh := crlRefresher(t, files, bad, "")
	refresh("true") // before nginx starts
	n := startNginx(t, files, "mtls-crl.conf")
	u := n.url("8445")
	wantAccepted(t, u, good)
	wantAccepted(t, u, bad)
	if !nginxRefused(t, u, stranger, hits) {
		t.Fatal("nginx accepted an agent of another CA")
	}

	mustRun(t, "revoke", "--dir", c.Dir, "--serial", bad.creds.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	time.Sleep(300 * time.Millisecond) // the CRL debounce (100 ms) and build
	wantAccepted(t, u, bad)            // nginx still has the old file
	refresh(n.reloadCommand())
	eventually(t, 5*time.Second, 100*time.Millisecond, "nginx to refuse the revoked agent after the reload", func() bool {
		return nginxRefused(t, u, bad, hits)
	})
	wantAccepted(t, u, good)
	if !strings.Contains(n.log(), "certificate revoked") {
		t.Errorf("nginx did not log the revocation:\n%s", n.log())
	}
}
