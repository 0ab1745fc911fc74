package test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
	"golang.org/x/crypto/ocsp"
)

// zlintSources are the lint sources that apply to a private CA: the RFCs
// and the community lints. The CA/Browser Forum, Mozilla, Apple and ETSI
// sources are Web PKI policy and are not run at all.
var zlintSources = lint.SourceList{lint.RFC5280, lint.RFC5480, lint.RFC3279, lint.RFC8813, lint.Community}

// zlintAllowed lists the lints, among zlintSources, that may report warn,
// error or fatal on agentca's certificates, each with the reason it only
// makes sense for the Web PKI. Keep it as short as possible; a defect in
// our certificates is fixed in the product, never listed here.
// docs/zlint.md carries the same list for the docs;
// TestZlintExceptionsDocumented keeps the two in step, and TestZlint fails
// on an entry that no longer fires.
//
// It is empty: with the sources above, the leaf, the issuing CA, the root,
// the daemon's own server certificate, the OCSP responder certificate and
// the CRL lint clean for every key type.
var zlintAllowed = map[string]string{}

// TestZlint lints the leaf, the issuing CA, the root, the HTTPS server
// certificate, the OCSP responder certificates (of the issuing CA and of
// the root) and the CRLs (of the issuing CA and of the root) of CAs of
// every key type; nothing may warn or fail apart from zlintAllowed.
func TestZlint(t *testing.T) {
	t.Parallel()
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: zlintSources})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(reg.Names()); n < 100 {
		t.Fatalf("only %d lints selected; the source filter is wrong", n)
	}
	var mu sync.Mutex
	fired := map[string]bool{}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		for name := range zlintAllowed {
			if !fired[name] {
				t.Errorf("allow-listed lint %s no longer fires; remove it from zlintAllowed and docs/zlint.md", name)
			}
		}
	})
	for _, kt := range []string{"ec-p256", "ec-p384", "ed25519", "rsa-2048"} {
		t.Run(kt, func(t *testing.T) {
			t.Parallel()
			ca := newCA(t, caOptions{keyType: kt})
			ca.start()
			out := filepath.Join(t.TempDir(), "creds")
			if r := ca.enroll(ca.token("spiffe://example.org/agent/lint"), out, "--key-type", kt); r.code != 0 {
				t.Fatalf("enroll: %s", r)
			}
			cr := readCreds(t, out)
			if len(cr.chain) == 0 {
				t.Fatal("no chain in cert.pem")
			}
			certs := map[string]*x509.Certificate{
				"leaf":                cr.leaf,
				"issuing CA":          cr.chain[0],
				"root":                ca.Roots[0],
				"server cert":         serverCert(t, ca),
				"OCSP responder cert": ocspResponderCert(t, cr.leaf, cr.chain[0]),
				// The root answers for the issuing CA with its own
				// delegated responder.
				"root OCSP responder cert": ocspResponderCert(t, cr.chain[0], ca.Roots[0]),
			}
			var problems []string
			for what, c := range certs {
				for _, p := range lintCert(t, reg, c) {
					problems = append(problems, what+": "+p)
				}
			}
			// The CRL, with one entry revoked for keyCompromise.
			out2 := filepath.Join(t.TempDir(), "creds")
			if r := ca.enroll(ca.token("spiffe://example.org/agent/revoked"), out2, "--key-type", kt); r.code != 0 {
				t.Fatalf("enroll: %s", r)
			}
			revoked := readCreds(t, out2).leaf
			mustRun(t, "revoke", "--dir", ca.Dir, "--serial", revoked.SerialNumber.Text(16), "--reason", "keyCompromise")
			crl := fetchCRL(t, cr.leaf, revoked)
			for _, p := range lintCRL(t, reg, crl) {
				problems = append(problems, "CRL: "+p)
			}
			// The root's CRL (of issuing CAs; empty).
			for _, p := range lintCRL(t, reg, fetchRootCRL(t, cr.chain[0], ca.Roots[0])) {
				problems = append(problems, "root CRL: "+p)
			}
			for _, p := range problems {
				name, _, _ := strings.Cut(strings.SplitN(p, ": ", 2)[1], ":")
				if zlintAllowed[name] != "" {
					mu.Lock()
					fired[name] = true
					mu.Unlock()
					continue
				}
				t.Errorf("%s %s", kt, p)
			}
		})
	}
}

// lintCert runs reg on c and returns "lint: status: details" for each
// result that is warn, error or fatal.
func lintCert(t *testing.T, reg lint.Registry, c *x509.Certificate) []string {
	t.Helper()
	zc, err := zx509.ParseCertificate(c.Raw)
	if err != nil {
		t.Fatalf("zcrypto cannot parse the certificate: %v", err)
	}
	rs := zlint.LintCertificateEx(zc, reg)
	if len(rs.Results) < 100 {
		t.Fatalf("zlint ran only %d lints", len(rs.Results))
	}
	var bad []string
	for name, r := range rs.Results {
		switch r.Status {
		case lint.Warn, lint.Error, lint.Fatal:
			bad = append(bad, name+": "+r.Status.String()+": "+r.Details)
		}
	}
	sort.Strings(bad)
	return bad
}

// lintCRL is lintCert for a DER CRL.
func lintCRL(t *testing.T, reg lint.Registry, der []byte) []string {
	t.Helper()
	crl, err := zx509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("zcrypto cannot parse the CRL: %v", err)
	}
	rs := zlint.LintRevocationListEx(crl, reg)
	if len(rs.Results) < 5 {
		t.Fatalf("zlint ran only %d lints on the CRL", len(rs.Results))
	}
	var bad []string
	for name, r := range rs.Results {
		switch r.Status {
		case lint.Warn, lint.Error, lint.Fatal:
			bad = append(bad, name+": "+r.Status.String()+": "+r.Details)
		}
	}
	sort.Strings(bad)
	return bad
}

// fetchCRL gets the CRL from leaf's distribution point and waits until it
// lists revoked.
func fetchCRL(t *testing.T, leaf, revoked *x509.Certificate) []byte {
	t.Helper()
	if len(leaf.CRLDistributionPoints) != 1 {
		t.Fatalf("leaf has CRL distribution points %v, want one", leaf.CRLDistributionPoints)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	var der []byte
	eventually(t, 10*time.Second, 100*time.Millisecond, "the CRL to list the revoked certificate", func() bool {
		r := do(t, hc, http.MethodGet, leaf.CRLDistributionPoints[0], "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", leaf.CRLDistributionPoints[0], r.status, r.body)
		}
		crl, err := x509.ParseRevocationList(r.body)
		if err != nil {
			t.Fatalf("CRL: %v", err)
		}
		der = r.body
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(revoked.SerialNumber) == 0 {
				return true
			}
		}
		return false
	})
	return der
}

// fetchRootCRL gets the CRL from the issuing CA's distribution point and
// checks that root signed it and that it lists nothing.
func fetchRootCRL(t *testing.T, iss, root *x509.Certificate) []byte {
	t.Helper()
	if len(iss.CRLDistributionPoints) != 1 {
		t.Fatalf("issuing CA has CRL distribution points %v, want one", iss.CRLDistributionPoints)
	}
	r := do(t, &http.Client{Timeout: 10 * time.Second}, http.MethodGet, iss.CRLDistributionPoints[0], "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", iss.CRLDistributionPoints[0], r.status, r.body)
	}
	crl, err := x509.ParseRevocationList(r.body)
	if err != nil {
		t.Fatalf("root CRL: %v", err)
	}
	if err := crl.CheckSignatureFrom(root); err != nil {
		t.Fatalf("root CRL: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("root CRL lists %d issuing CAs, want none", len(crl.RevokedCertificateEntries))
	}
	return r.body
}

// ocspResponderCert asks the leaf's OCSP responder about the leaf and
// returns the delegated responder certificate that signed the answer.
func ocspResponderCert(t *testing.T, leaf, issuer *x509.Certificate) *x509.Certificate {
	t.Helper()
	if len(leaf.OCSPServer) != 1 {
		t.Fatalf("leaf has OCSP servers %v, want one", leaf.OCSPServer)
	}
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	r := do(t, hc, http.MethodPost, leaf.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if r.status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", leaf.OCSPServer[0], r.status, r.body)
	}
	resp, err := ocsp.ParseResponseForCert(r.body, leaf, issuer)
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	if resp.Status != ocsp.Good {
		t.Errorf("OCSP status %d for a fresh leaf, want good", resp.Status)
	}
	if resp.Certificate == nil {
		t.Fatalf("the OCSP response carries no responder certificate")
	}
	return resp.Certificate
}

// serverCert returns the certificate the daemon presents on HTTPS.
func serverCert(t *testing.T, ca *testCA) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&netDialer, "tcp", ca.HTTPS, &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to %s: %v", ca.HTTPS, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestZlintExceptionsDocumented checks that docs/zlint.md
// lists exactly the lints in zlintAllowed.
func TestZlintExceptionsDocumented(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "docs", "zlint.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Table rows start with the lint name in backquotes.
	rows := regexp.MustCompile("(?m)^\\|\\s*`([a-z]_[a-z0-9_]+)`").FindAllStringSubmatch(string(b), -1)
	doc := map[string]bool{}
	for _, m := range rows {
		doc[m[1]] = true
	}
	for name := range zlintAllowed {
		if !doc[name] {
			t.Errorf("%s is allow-listed in zlint_test.go but not in docs/zlint.md", name)
		}
	}
	for name := range doc {
		if zlintAllowed[name] == "" {
			t.Errorf("%s is in docs/zlint.md but not allow-listed in zlint_test.go", name)
		}
	}
	for _, s := range zlintSources {
		if !regexp.MustCompile(regexp.QuoteMeta(string(s))).Match(b) {
			t.Errorf("docs/zlint.md does not name the lint source %s", s)
		}
	}
}

var netDialer = net.Dialer{Timeout: 10 * time.Second}
