package test

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestEnrollHappyPath walks the path a user takes: init, serve, token
// create, enroll (with --root, then with --fingerprint), and checks the
// files and the certificate with crypto/x509, openssl and go-spiffe.
func TestEnrollHappyPath(t *testing.T) {
	t.Parallel()
	openssl := requireOpenSSL(t)
	ca := newCA(t, caOptions{})
	ca.start()
	const id = "spiffe://example.org/agent/x"

	// Enroll with --root.
	out := filepath.Join(t.TempDir(), "creds")
	tok := ca.token(id)
	before := time.Now()
	r := ca.enroll(tok, out)
	after := time.Now()
	if r.code != 0 {
		t.Fatalf("enroll --root: %s", r)
	}
	cr := readCreds(t, out)
	checkLeaf(t, ca, cr, id, before, after)
	onlyCredFiles(t, out)
	if m := regexp.MustCompile(`serial ([0-9a-f]+)`).FindStringSubmatch(r.stdout); m == nil || normSerial(t, m[1]) != cr.leaf.SerialNumber.Text(16) {
		t.Errorf("enroll did not print the serial %x of the certificate it wrote: %q", cr.leaf.SerialNumber, r.stdout)
	}

	t.Run("openssl verify", func(t *testing.T) {
		dir := t.TempDir()
		leafFile, issuingFile := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "issuing.pem")
		writeFile(t, leafFile, certPEM(cr.leaf))
		writeFile(t, issuingFile, certPEM(cr.chain[0]))
		for _, extra := range [][]string{nil, {"-x509_strict", "-purpose", "sslclient"}, {"-x509_strict", "-purpose", "sslserver"}} {
			args := append(append([]string{"verify"}, extra...), "-CAfile", ca.rootsFile(), "-untrusted", issuingFile, leafFile)
			outp, err := exec.Command(openssl, args...).CombinedOutput()
			if err != nil || !strings.Contains(string(outp), leafFile+": OK") {
				t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, outp)
			}
		}
		// And without the issuing CA it must not verify: the chain
		// really goes through it.
		outp, err := exec.Command(openssl, "verify", "-CAfile", ca.rootsFile(), leafFile).CombinedOutput()
		if err == nil {
			t.Errorf("openssl verify succeeded without the issuing CA:\n%s", outp)
		}
	})

	t.Run("openssl s_client mTLS", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", ca.HTTPS, "-CAfile", ca.rootsFile(),
			"-cert", filepath.Join(out, "cert.pem"), "-key", filepath.Join(out, "key.pem"),
			"-verify_return_error", "-verify_ip", "127.0.0.1")
		cmd.Stdin = strings.NewReader("") // EOF right after the handshake
		outp, err := cmd.CombinedOutput()
		s := string(outp)
		if err != nil {
			t.Fatalf("openssl s_client: %v\n%s", err, s)
		}
		if !strings.Contains(s, "Verify return code: 0 (ok)") {
			t.Errorf("openssl s_client: no 'Verify return code: 0 (ok)':\n%s", s)
		}
		// openssl prints the signature algorithms of a CertificateRequest
		// only when the server sent one.
		if !strings.Contains(s, "Requested Signature Algorithms:") {
			t.Errorf("the server did not request a client certificate:\n%s", s)
		}
	})

	t.Run("go-spiffe", func(t *testing.T) {
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		resp := do(t, hc, http.MethodGet, ca.URL+"/v1/bundle", "", nil)
		if resp.status != http.StatusOK {
			t.Fatalf("GET /v1/bundle: %d %s", resp.status, resp.body)
		}
		td := spiffeid.RequireTrustDomainFromString("example.org")
		b, err := spiffebundle.Parse(td, resp.body)
		if err != nil {
			t.Fatalf("spiffebundle.Parse: %v\n%s", err, resp.body)
		}
		if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(ca.Roots[0]) {
			t.Errorf("bundle authorities are not roots.pem: %d authorities", len(got))
		}
		chain := append([]*x509.Certificate{cr.leaf}, cr.chain...)
		gotID, _, err := x509svid.Verify(chain, b)
		if err != nil {
			t.Fatalf("x509svid.Verify: %v", err)
		}
		if gotID.String() != id {
			t.Errorf("x509svid.Verify: ID %s, want %s", gotID, id)
		}
		// The parsed SVID also passes go-spiffe's structural checks.
		certPEMBytes, _ := os.ReadFile(filepath.Join(out, "cert.pem"))
		keyPEMBytes, _ := os.ReadFile(filepath.Join(out, "key.pem"))
		if _, err := x509svid.Parse(certPEMBytes, keyPEMBytes); err != nil {
			t.Errorf("x509svid.Parse(cert.pem, key.pem): %v", err)
		}
	})

	t.Run("roots", func(t *testing.T) {
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		resp := do(t, hc, http.MethodGet, ca.URL+"/v1/roots", "", nil)
		if resp.status != http.StatusOK || resp.header.Get("Content-Type") != "application/pem-certificate-chain" {
			t.Errorf("GET /v1/roots: %d %q", resp.status, resp.header.Get("Content-Type"))
		}
		if got := parseCerts(t, resp.body); len(got) != 1 || !got[0].Equal(ca.Roots[0]) {
			t.Errorf("GET /v1/roots is not roots.pem")
		}
	})

	t.Run("the CSR cannot choose the identity", func(t *testing.T) {
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		evil, _ := url.Parse("spiffe://example.org/admin/ops")
		csr := csrPEM(t, newECKey(t), &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "admin"}, URIs: []*url.URL{evil}, DNSNames: []string{"evil.example.org"},
			IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}, EmailAddresses: []string{"root@example.org"},
		})
		sr, leaf := wantIssued(t, postJSON(t, hc, ca.URL+"/v1/sign", signBody("join", ca.token(id), csr, "")))
		if sr.SPIFFEID != id || spiffeIDOf(t, leaf) != id {
			t.Errorf("issued %s / %v, want the token's %s", sr.SPIFFEID, leaf.URIs, id)
		}
		if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.CommonName != "" {
			t.Errorf("the CSR's names were copied: subject %q, DNS %v, IP %v, email %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
	})

	t.Run("fingerprint", func(t *testing.T) {
		if want := sha256Hex(ca.Roots[0].Raw); ca.Fingerprint != want {
			t.Errorf("init printed fingerprint %s, SHA-256 of the root DER is %s", ca.Fingerprint, want)
		}
		out2 := filepath.Join(t.TempDir(), "creds")
		r := runCLI(t, "enroll", "--ca", ca.URL, "--fingerprint", sha256Hex(ca.Roots[0].Raw), "--token", ca.token(id), "--out", out2)
		if r.code != 0 {
			t.Fatalf("enroll --fingerprint: %s", r)
		}
		cr2 := readCreds(t, out2)
		checkLeaf(t, ca, cr2, id, time.Time{}, time.Time{})
		if cr2.leaf.SerialNumber.Cmp(cr.leaf.SerialNumber) == 0 {
			t.Errorf("two enrollments got the same serial %x", cr.leaf.SerialNumber)
		}

		// A wrong pin: exit 1, one line, no files, and the token is
		// not spent (nothing was sent).
		wrong := sha256Hex([]byte("not the root"))
		out3 := filepath.Join(t.TempDir(), "creds")
		tok := ca.token(id)
		r = runCLI(t, "enroll", "--ca", ca.URL, "--fingerprint", wrong, "--token", tok, "--out", out3)
		if r.code != 1 {
			t.Errorf("enroll with a wrong --fingerprint: want exit 1:\n%s", r)
		}
		oneLine(t, r)
		if _, err := os.Stat(filepath.Join(out3, "cert.pem")); err == nil {
			t.Errorf("enroll with a wrong pin wrote cert.pem")
		}
		if r := ca.enroll(tok, out3); r.code != 0 {
			t.Errorf("the token given with a wrong pin was spent: %s", r)
		}
	})
}

// onlyCredFiles checks that dir holds the three files and no leftovers
// (temporary files of the atomic writes).
func onlyCredFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "bundle.pem cert.pem key.pem" {
		t.Errorf("%s holds %v, want bundle.pem cert.pem key.pem", dir, names)
	}
}

// checkLeaf checks the files enroll wrote and the X.509-SVID profile.
// issuedAfter/issuedBefore bound when it was issued (zero: unchecked).
func checkLeaf(t *testing.T, ca *testCA, cr *creds, id string, issuedAfter, issuedBefore time.Time) {
	t.Helper()
	leaf := cr.leaf
	if cr.keyMode != 0o600 {
		t.Errorf("key.pem mode %o, want 600", cr.keyMode)
	}
	if len(cr.chain) == 0 {
		t.Fatalf("cert.pem holds only the leaf, no chain")
	}
	for i, c := range cr.chain {
		if !c.IsCA {
			t.Errorf("cert.pem certificate %d after the leaf is not a CA", i+1)
		}
	}
	if err := leaf.CheckSignatureFrom(cr.chain[0]); err != nil {
		t.Errorf("cert.pem: the leaf is not signed by the next certificate: %v", err)
	}
	if len(cr.bundle) != len(ca.Roots) {
		t.Errorf("bundle.pem has %d certificates, roots.pem %d", len(cr.bundle), len(ca.Roots))
	}
	for i := range cr.bundle {
		if i < len(ca.Roots) && !cr.bundle[i].Equal(ca.Roots[i]) {
			t.Errorf("bundle.pem certificate %d is not roots.pem's", i)
		}
	}
	verifyLeaf(t, leaf, cr.chain, ca.pool())

	if got := spiffeIDOf(t, leaf); got != id {
		t.Errorf("URI SAN %s, want %s", got, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected SANs: DNS %v IP %v email %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basicConstraints: valid %v, CA %v; want CA=false", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("keyUsage %b, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || len(leaf.UnknownExtKeyUsage) != 0 ||
		!hasEKU(leaf, x509.ExtKeyUsageServerAuth) || !hasEKU(leaf, x509.ExtKeyUsageClientAuth) {
		t.Errorf("extKeyUsage %v (unknown %v), want serverAuth+clientAuth", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if len(leaf.Subject.Names) == 0 && !sanCritical(leaf) {
		t.Errorf("empty subject but the subjectAltName extension is not critical")
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if life < 5*time.Minute || life > 6*time.Minute {
		t.Errorf("lifetime %s (%s to %s), want 5m plus at most 1m of backdating", life, leaf.NotBefore, leaf.NotAfter)
	}
	if !issuedAfter.IsZero() {
		// NotAfter is the issuance second plus 5 minutes.
		lo, hi := issuedAfter.Truncate(time.Second).Add(5*time.Minute), issuedBefore.Add(5*time.Minute)
		if leaf.NotAfter.Before(lo) || leaf.NotAfter.After(hi) {
			t.Errorf("NotAfter %s, want issuance time + 5m, in [%s, %s]", leaf.NotAfter, lo, hi)
		}
		if leaf.NotBefore.After(issuedAfter) {
			t.Errorf("NotBefore %s is after the issuance (%s)", leaf.NotBefore, issuedAfter)
		}
	}
	if leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %x is not positive", leaf.SerialNumber)
	}
	if leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %x has %d bits, want at least 64", leaf.SerialNumber, leaf.SerialNumber.BitLen())
	}
	if leaf.Version != 3 {
		t.Errorf("version %d, want 3", leaf.Version)
	}
}

func hasEKU(c *x509.Certificate, eku x509.ExtKeyUsage) bool {
	for _, e := range c.ExtKeyUsage {
		if e == eku {
			return true
		}
	}
	return false
}

func sanCritical(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal([]int{2, 5, 29, 17}) {
			return e.Critical
		}
	}
	return false
}

// TestHealthBothListeners checks /health on HTTPS and plain HTTP.
func TestHealthBothListeners(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	ca.start()
	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	for _, u := range []string{ca.URL + "/health", "http://" + ca.HTTP + "/health"} {
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(bytes.TrimSpace(b), []byte(`{"status":"ok"}`)) {
			t.Errorf("GET %s: %d %q", u, resp.StatusCode, b)
		}
	}
}
