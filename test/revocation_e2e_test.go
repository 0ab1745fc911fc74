package test

// End-to-end tests of revocation (issue 4) with real clients only: the
// agentca binary, the openssl command (ocsp, crl, verify) and net/http.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// revLeaf is a certificate enrolled for a test, with the files openssl
// needs next to it.
type revLeaf struct {
	dir     string // enroll --out: cert.pem (leaf, chain), key.pem, bundle.pem
	cr      *creds
	leafPEM string // the leaf alone
	issuer  string // the issuing CA alone (2nd certificate of cert.pem)
	serial  string // hex, as agentca prints it
}

func revEnroll(t *testing.T, ca *testCA, name string) *revLeaf {
	t.Helper()
	base := t.TempDir()
	out := filepath.Join(base, "creds")
	if r := ca.enroll(ca.token("spiffe://example.org/rev/"+name), out); r.code != 0 {
		t.Fatalf("enroll: %s", r)
	}
	cr := readCreds(t, out)
	if len(cr.chain) == 0 {
		t.Fatalf("cert.pem in %s holds no issuing CA", out)
	}
	l := &revLeaf{dir: out, cr: cr, leafPEM: filepath.Join(base, "leaf.pem"), issuer: filepath.Join(base, "issuing.pem"),
		serial: cr.leaf.SerialNumber.Text(16)}
	writeFile(t, l.leafPEM, certPEM(cr.leaf))
	writeFile(t, l.issuer, certPEM(cr.chain[0]))
	return l
}

func (l *revLeaf) certFile() string { return filepath.Join(l.dir, "cert.pem") }

// revOut is how one openssl run ended.
type revOut struct {
	args           []string
	stdout, stderr string
	code           int
}

func (o revOut) String() string {
	return fmt.Sprintf("openssl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(o.args, " "), o.code, o.stdout, o.stderr)
}

// revOpenSSL runs the openssl command (failing the test if it is missing).
func revOpenSSL(t *testing.T, args ...string) revOut {
	t.Helper()
	bin := requireOpenSSL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	o := revOut{args: args, stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		o.code = ee.ExitCode()
	default:
		t.Fatalf("running openssl %v: %v", args, err)
	}
	return o
}

// revQuery is one `openssl ocsp` question.
type revQuery struct {
	url, issuer, roots string
	cert               string // -cert, or
	serial             string // -serial
	digest             string // CertID digest option, e.g. "-sha256"; empty: openssl's SHA-1
	nonce              bool   // -nonce, else -no_nonce
}

var revStatusLine = regexp.MustCompile(`(?m)^\S+: (good|revoked|unknown)$`)

// revOCSP asks the responder with openssl ocsp and returns the status it
// printed. It requires that the response verified against q.roots and,
// since the responder does not echo nonces (docs/revocation.md), that a
// request with a nonce got exactly the warning about it.
func revOCSP(t *testing.T, q revQuery) (string, revOut) {
	t.Helper()
	args := []string{"ocsp", "-url", q.url, "-issuer", q.issuer, "-CAfile", q.roots, "-timeout", "10"}
	want := "Response verify OK"
	if q.nonce {
		args = append(args, "-nonce")
		want = "WARNING: no nonce in response\nResponse verify OK"
	} else {
		args = append(args, "-no_nonce")
	}
	if q.digest != "" {
		args = append(args, q.digest) // must come before -cert / -serial
	}
	if q.serial != "" {
		args = append(args, "-serial", q.serial)
	} else {
		args = append(args, "-cert", q.cert)
	}
	o := revOpenSSL(t, args...)
	if o.code != 0 {
		t.Fatalf("want exit 0:\n%s", o)
	}
	if got := strings.TrimSpace(o.stderr); got != want {
		t.Errorf("stderr %q, want %q\n%s", got, want, o)
	}
	m := revStatusLine.FindStringSubmatch(o.stdout)
	if m == nil {
		t.Fatalf("no status line:\n%s", o)
	}
	if !strings.Contains(o.stdout, "This Update:") || !strings.Contains(o.stdout, "Next Update:") {
		t.Errorf("no This Update / Next Update:\n%s", o)
	}
	return m[1], o
}

// revWantRevoked checks openssl's output for a revoked answer.
func revWantRevoked(t *testing.T, o revOut, reason string) {
	t.Helper()
	if !strings.Contains(o.stdout, "Reason: "+reason+"\n") || !strings.Contains(o.stdout, "Revocation Time:") {
		t.Errorf("want reason %s and a revocation time:\n%s", reason, o)
	}
}

// revOCSPGet builds a request with openssl ocsp -reqout, sends it as
// GET /ocsp/<url-escaped base64> with net/http, checks the RFC 5019
// headers, verifies the body with openssl ocsp -respin and returns the
// status.
func revOCSPGet(t *testing.T, ca *testCA, l *revLeaf, digest string) (string, revOut) {
	t.Helper()
	dir := t.TempDir()
	reqFile, respFile := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")
	args := []string{"ocsp", "-no_nonce", "-reqout", reqFile, "-issuer", l.issuer}
	if digest != "" {
		args = append(args, digest)
	}
	if o := revOpenSSL(t, append(args, "-cert", l.leafPEM)...); o.code != 0 {
		t.Fatalf("want exit 0:\n%s", o)
	}
	der, err := os.ReadFile(reqFile)
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ca.HTTP + "/ocsp/" + url.QueryEscape(base64.StdEncoding.EncodeToString(der))
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	r := do(t, hc, http.MethodGet, u, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/ocsp-response" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); !regexp.MustCompile(`^max-age=\d+,`).MatchString(cc) {
		t.Errorf("Cache-Control %q, want max-age=…", cc)
	} else if n, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(cc, ",", 2)[0], "max-age=")); n <= 0 || n > 300 {
		t.Errorf("Cache-Control %q: max-age outside (0, 300] for a 5 min validity", cc)
	}
	lm, err1 := http.ParseTime(r.header.Get("Last-Modified"))
	exp, err2 := http.ParseTime(r.header.Get("Expires"))
	if err1 != nil || err2 != nil {
		t.Errorf("Last-Modified %q (%v), Expires %q (%v)", r.header.Get("Last-Modified"), err1, r.header.Get("Expires"), err2)
	} else if exp.Sub(lm) != 5*time.Minute || !exp.After(time.Now()) {
		t.Errorf("Last-Modified %s, Expires %s: want 5 min apart, Expires in the future", lm, exp)
	}
	etag := r.header.Get("ETag")
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("If-None-Match", etag)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("ETag %q; If-None-Match: status %d, want 304", etag, resp.StatusCode)
	}
	writeFile(t, respFile, r.body)
	args = []string{"ocsp", "-respin", respFile, "-issuer", l.issuer, "-CAfile", ca.rootsFile(), "-no_nonce"}
	if digest != "" {
		args = append(args, digest)
	}
	o := revOpenSSL(t, append(args, "-cert", l.leafPEM)...)
	if o.code != 0 || strings.TrimSpace(o.stderr) != "Response verify OK" {
		t.Errorf("want exit 0 and Response verify OK:\n%s", o)
	}
	m := revStatusLine.FindStringSubmatch(o.stdout)
	if m == nil {
		t.Fatalf("no status line:\n%s", o)
	}
	return m[1], o
}

func revRandomSerial(t *testing.T) *big.Int {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 0x10
	return new(big.Int).SetBytes(b)
}

// TestRevOCSPOpenSSL: openssl ocsp against the daemon, before and after a
// revocation, with and without nonce, SHA-1 and SHA-256 CertIDs, POST and
// GET, and a serial the CA never issued.
func TestRevOCSPOpenSSL(t *testing.T) {
	t.Parallel()
	requireOpenSSL(t)
	ca := newCA(t, caOptions{})
	ca.start()
	l := revEnroll(t, ca, "ocsp")
	base := revQuery{url: "http://" + ca.HTTP + "/ocsp", issuer: l.issuer, roots: ca.rootsFile(), cert: l.leafPEM}
	never := "0x" + revRandomSerial(t).Text(16)

	// Every variant: SHA-1 and SHA-256 CertIDs; POST (openssl ocsp -url)
	// with and without nonce, and GET (built with -reqout); a never-issued
	// serial is unknown throughout.
	all := func(want, reason string) {
		t.Helper()
		check := func(what, st string, o revOut, want, reason string) {
			t.Helper()
			if st != want {
				t.Errorf("%s: %s, want %s\n%s", what, st, want, o)
			} else if reason != "" {
				revWantRevoked(t, o, reason)
			}
		}
		for _, digest := range []string{"", "-sha256"} {
			for _, nonce := range []bool{false, true} {
				q := base
				q.nonce, q.digest = nonce, digest
				st, o := revOCSP(t, q)
				check("POST", st, o, want, reason)
				q.serial = never
				st, o = revOCSP(t, q)
				check("never-issued serial "+never, st, o, "unknown", "")
			}
			st, o := revOCSPGet(t, ca, l, digest)
			check("GET", st, o, want, reason)
		}
	}
	all("good", "")

	// The answer is signed by the delegated responder certificate.
	resp := revPostOCSP(t, ca, l)
	rc := resp.Certificate
	if resp.Status != ocsp.Good || rc == nil {
		t.Fatalf("POST /ocsp: status %d, responder certificate included: %v", resp.Status, rc != nil)
	}
	noCheck := false
	for _, e := range rc.Extensions {
		noCheck = noCheck || e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5})
	}
	if len(rc.ExtKeyUsage) != 1 || rc.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning || !noCheck || rc.IsCA ||
		!bytes.Equal(rc.RawIssuer, l.cr.chain[0].RawSubject) {
		t.Errorf("responder certificate: EKU %v, ocsp-nocheck %v, CA %v, issuer %s", rc.ExtKeyUsage, noCheck, rc.IsCA, rc.Issuer)
	}

	// Revoke; the revoked answer shows within a second.
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", l.serial, "--reason", "keyCompromise")
	revokedAt := time.Now()
	for {
		st, o := revOCSP(t, base)
		elapsed := time.Since(revokedAt)
		if st == "revoked" {
			if elapsed > time.Second {
				t.Errorf("openssl saw the revocation %s after the revoke command returned, want ≤ 1s", elapsed)
			}
			revWantRevoked(t, o, "keyCompromise")
			break
		}
		if st != "good" || elapsed > 5*time.Second {
			t.Fatalf("%s after revocation (%s later):\n%s", st, elapsed, o)
		}
		time.Sleep(20 * time.Millisecond)
	}
	all("revoked", "keyCompromise")
}

// revPostOCSP asks the leaf's responder with net/http and x/crypto/ocsp
// and returns the verified answer.
func revPostOCSP(t *testing.T, ca *testCA, l *revLeaf) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(l.cr.leaf, l.cr.chain[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	r := do(t, hc, http.MethodPost, "http://"+ca.HTTP+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if r.status != http.StatusOK {
		t.Fatalf("POST /ocsp: %d %s", r.status, r.body)
	}
	resp, err := ocsp.ParseResponseForCert(r.body, l.cr.leaf, l.cr.chain[0])
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	return resp
}

// revForge makes a certificate with ca's issuing CA as issuer but a serial
// the CA never issued (signed with the issuing key from the CA's
// directory), and writes it with its issuer to a PEM file.
func revForge(t *testing.T, ca *testCA, l *revLeaf) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ca.Dir, "keys", "issuing.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("keys/issuing.key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("keys/issuing.key: %v", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !samePublicKey(signer.Public(), l.cr.chain[0].PublicKey) {
		t.Fatalf("keys/issuing.key does not hold the issuing CA's key")
	}
	tmpl := &x509.Certificate{
		SerialNumber: revRandomSerial(t), Subject: pkix.Name{CommonName: "never issued"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, OCSPServer: l.cr.leaf.OCSPServer,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, l.cr.chain[0], newECKey(t).Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "forged.pem")
	writeFile(t, f, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), certPEM(l.cr.chain[0])...))
	return f
}

// TestRevAgentcaOCSP: agentca ocsp prints good, then revoked; --url and
// --issuer; certificates the CA never issued are not good.
func TestRevAgentcaOCSP(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	other := newCA(t, caOptions{})
	ca.start()
	other.start()
	l := revEnroll(t, ca, "cli")
	foreign := revEnroll(t, other, "foreign")
	ours, theirs := "http://"+ca.HTTP+"/ocsp", "http://"+other.HTTP+"/ocsp"

	for _, args := range [][]string{
		{"--cert", l.certFile()},                                   // URL from the AIA, issuer from cert.pem
		{"--cert", l.certFile(), "--url", ours},                    // --url
		{"--cert", l.leafPEM, "--issuer", l.issuer},                // --issuer
		{"--cert", foreign.certFile(), "--url", theirs},            // the other CA knows its own
		{"--cert", foreign.certFile(), "--issuer", foreign.issuer}, // both flags
	} {
		r := runCLI(t, append([]string{"ocsp"}, args...)...)
		if r.code != 0 || r.stdout != "good\n" {
			t.Errorf("want good, exit 0:\n%s", r)
		}
	}
	// --url is really used: the other CA's responder does not serve our
	// issuer, and ours never issued the other CA's certificate.
	for _, args := range [][]string{
		{"--cert", l.certFile(), "--url", theirs},
		{"--cert", foreign.certFile(), "--url", ours},
	} {
		r := runCLI(t, append([]string{"ocsp"}, args...)...)
		if r.code != 1 || r.stdout != "" {
			t.Errorf("want exit 1 with an error:\n%s", r)
		}
		oneLine(t, r)
	}
	// Our issuer, a serial we never issued: unknown.
	if r := runCLI(t, "ocsp", "--cert", revForge(t, ca, l)); r.code != 1 || r.stdout != "unknown\n" {
		t.Errorf("never-issued serial: want unknown, exit 1:\n%s", r)
	}

	rv := mustRun(t, "revoke", "--dir", ca.Dir, "--serial", l.serial, "--reason", "keyCompromise")
	m := regexp.MustCompile(`^Revoked ([0-9a-f]+) \(\S+\) at (\S+), reason keyCompromise\n$`).FindStringSubmatch(rv.stdout)
	if m == nil || normSerial(t, m[1]) != l.serial {
		t.Fatalf("revoke output: %q", rv.stdout)
	}
	start := time.Now()
	want := "revoked (keyCompromise, " + m[2] + ")\n"
	for {
		r := runCLI(t, "ocsp", "--cert", l.certFile())
		if r.stdout == want && r.code == 1 {
			if e := time.Since(start); e > time.Second {
				t.Errorf("agentca ocsp saw the revocation after %s, want ≤ 1s", e)
			}
			break
		}
		if r.stdout != "good\n" || time.Since(start) > 5*time.Second {
			t.Fatalf("after revocation want %q, exit 1:\n%s", want, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := runCLI(t, "ocsp", "--cert", l.leafPEM, "--issuer", l.issuer, "--url", ours); r.code != 1 || r.stdout != want {
		t.Errorf("want %q, exit 1:\n%s", want, r)
	}
}

// revCRL is one fetched CRL.
type revCRL struct {
	der []byte
	crl *x509.RevocationList
}

// revFetchCRL GETs a CRL with net/http and checks the HTTP answer.
func revFetchCRL(t *testing.T, hc *http.Client, u string) revCRL {
	t.Helper()
	r := do(t, hc, http.MethodGet, u, "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, r.status, r.body)
	}
	if ct, etag := r.header.Get("Content-Type"), r.header.Get("ETag"); ct != "application/pkix-crl" || etag == "" {
		t.Errorf("GET %s: Content-Type %q, ETag %q", u, ct, etag)
	}
	crl, err := x509.ParseRevocationList(r.body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return revCRL{der: r.body, crl: crl}
}

// revAwaitCRL polls every URL until each CRL lists serial, requiring that
// within a second of since, and returns the last one.
func revAwaitCRL(t *testing.T, hc *http.Client, urls []string, serial *big.Int, since time.Time) revCRL {
	t.Helper()
	var c revCRL
	for _, u := range urls {
		for {
			c = revFetchCRL(t, hc, u)
			e := time.Since(since)
			if slices.ContainsFunc(c.crl.RevokedCertificateEntries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Cmp(serial) == 0 }) {
				if e > time.Second {
					t.Errorf("%s listed serial %x %s after the revoke command returned, want ≤ 1s", u, serial, e)
				}
				break
			}
			if e > 5*time.Second {
				t.Fatalf("%s does not list serial %x %s after its revocation", u, serial, e)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

var (
	revCRLNumber = regexp.MustCompile(`X509v3 CRL Number: *\n\s*([0-9]+)\n`)
	revCRLSerial = regexp.MustCompile(`Serial Number: ([0-9A-F]+)\n`)
)

// revOpenSSLCRL verifies a DER CRL with openssl crl against issuer and
// checks that its text lists serials and the CRL Number.
func revOpenSSLCRL(t *testing.T, c revCRL, issuer string, serials ...*big.Int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "crl.der")
	writeFile(t, f, c.der)
	o := revOpenSSL(t, "crl", "-inform", "DER", "-in", f, "-CAfile", issuer, "-noout", "-text")
	if o.code != 0 || strings.TrimSpace(o.stderr) != "verify OK" {
		t.Errorf("want exit 0 and verify OK:\n%s", o)
	}
	if !strings.Contains(o.stdout, "Version 2 (0x1)") || !strings.Contains(o.stdout, "X509v3 Authority Key Identifier") {
		t.Errorf("want a v2 CRL with an AKI:\n%s", o)
	}
	if m := revCRLNumber.FindStringSubmatch(o.stdout); m == nil || m[1] != c.crl.Number.String() {
		t.Errorf("openssl shows CRL Number %v, want %s:\n%s", m, c.crl.Number, o)
	}
	listed := map[string]bool{}
	for _, m := range revCRLSerial.FindAllStringSubmatch(o.stdout, -1) {
		n, _ := new(big.Int).SetString(m[1], 16)
		listed[n.Text(16)] = true
	}
	for _, s := range serials {
		if !listed[s.Text(16)] {
			t.Errorf("openssl crl does not list serial %X:\n%s", s, o)
		}
	}
}

// TestRevCRL: CRLs over HTTP, checked by openssl crl and openssl verify
// -crl_check.
func TestRevCRL(t *testing.T) {
	t.Parallel()
	requireOpenSSL(t)
	ca := newCA(t, caOptions{})
	ca.start()
	a, b, good := revEnroll(t, ca, "crl-a"), revEnroll(t, ca, "crl-b"), revEnroll(t, ca, "crl-good")
	issuer := a.cr.chain[0]
	dp := "http://" + ca.HTTP + "/crl/" + hex.EncodeToString(issuer.SubjectKeyId)
	if got := a.cr.leaf.CRLDistributionPoints; len(got) != 1 || got[0] != dp {
		t.Errorf("CRL distribution points %v, want [%s]", got, dp)
	}
	urls := []string{"http://" + ca.HTTP + "/crl", dp}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", a.serial, "--reason", "keyCompromise")
	c1 := revAwaitCRL(t, hc, urls, a.cr.leaf.SerialNumber, time.Now())
	revOpenSSLCRL(t, c1, a.issuer, a.cr.leaf.SerialNumber)
	if err := c1.crl.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if !bytes.Equal(c1.crl.AuthorityKeyId, issuer.SubjectKeyId) || c1.crl.NextUpdate.Sub(c1.crl.ThisUpdate) != 10*time.Minute {
		t.Errorf("CRL AKI %x (issuer SKI %x), validity %s (want 10m)", c1.crl.AuthorityKeyId, issuer.SubjectKeyId, c1.crl.NextUpdate.Sub(c1.crl.ThisUpdate))
	}

	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", b.serial, "--reason", "superseded")
	c2 := revAwaitCRL(t, hc, urls, b.cr.leaf.SerialNumber, time.Now())
	revOpenSSLCRL(t, c2, a.issuer, a.cr.leaf.SerialNumber, b.cr.leaf.SerialNumber)
	if c2.crl.Number.Cmp(c1.crl.Number) <= 0 {
		t.Errorf("CRL Number %s after the second revocation, want > %s", c2.crl.Number, c1.crl.Number)
	}
	reasons := map[string]int{}
	for _, e := range c2.crl.RevokedCertificateEntries {
		reasons[e.SerialNumber.Text(16)] = e.ReasonCode
	}
	if reasons[a.serial] != 1 || reasons[b.serial] != 4 || len(reasons) != 2 {
		t.Errorf("CRL entries %v, want %s: 1 (keyCompromise), %s: 4 (superseded)", reasons, a.serial, b.serial)
	}

	// openssl verify -crl_check with the PEM-converted CRL.
	dir := t.TempDir()
	der, crlPEM, chain := filepath.Join(dir, "crl.der"), filepath.Join(dir, "crl.pem"), filepath.Join(dir, "chain.pem")
	writeFile(t, der, c2.der)
	if o := revOpenSSL(t, "crl", "-inform", "DER", "-in", der, "-outform", "PEM", "-out", crlPEM); o.code != 0 {
		t.Fatalf("converting the CRL:\n%s", o)
	}
	writeFile(t, chain, append(append([]byte{}, ca.RootsPEM...), certPEM(issuer)...))
	for _, l := range []*revLeaf{a, b} {
		o := revOpenSSL(t, "verify", "-crl_check", "-CAfile", chain, "-CRLfile", crlPEM, l.leafPEM)
		if o.code == 0 || !strings.Contains(o.stdout+o.stderr, "certificate revoked") {
			t.Errorf("want the revoked leaf refused with certificate revoked:\n%s", o)
		}
	}
	if o := revOpenSSL(t, "verify", "-crl_check", "-CAfile", chain, "-CRLfile", crlPEM, good.leafPEM); o.code != 0 || o.stdout != good.leafPEM+": OK\n" {
		t.Errorf("want the good leaf accepted:\n%s", o)
	}
}

// TestRevSelfRevoke: agentca revoke --ca --out over mTLS, idempotence,
// renewal refused, CLI errors.
func TestRevSelfRevoke(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	ca.start()
	l := revEnroll(t, ca, "self")
	other := revEnroll(t, ca, "bystander")

	r := mustRun(t, "revoke", "--ca", ca.URL, "--out", l.dir, "--reason", "superseded")
	m := regexp.MustCompile(`^Revoked ([0-9a-f]+) \((\S+)\) at (\S+), reason superseded\n$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("revoke output: %q", r.stdout)
	}
	if normSerial(t, m[1]) != l.serial || m[2] != spiffeIDOf(t, l.cr.leaf) {
		t.Errorf("revoke printed serial %s and ID %s, want %s and %s", m[1], m[2], l.serial, spiffeIDOf(t, l.cr.leaf))
	}
	// Revoking again, a second later and with other reasons, answers with
	// the first revocation, over mTLS and through the admin socket.
	at, err := time.Parse(time.RFC3339, m[3])
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(at.Add(1100 * time.Millisecond))
	if r2 := mustRun(t, "revoke", "--ca", ca.URL, "--out", l.dir, "--reason", "keyCompromise"); r2.stdout != r.stdout {
		t.Errorf("second self-revoke printed %q, want %q", r2.stdout, r.stdout)
	}
	if r3 := mustRun(t, "revoke", "--dir", ca.Dir, "--serial", l.serial, "--reason", "cessationOfOperation"); r3.stdout != r.stdout {
		t.Errorf("admin revoke of a revoked serial printed %q, want %q", r3.stdout, r.stdout)
	}
	if r := runCLI(t, "ocsp", "--cert", l.certFile()); r.code != 1 || r.stdout != "revoked (superseded, "+m[3]+")\n" {
		t.Errorf("agentca ocsp after self-revoke:\n%s", r)
	}

	// A revoked certificate cannot renew.
	rr := runCLI(t, "renew", "--ca", ca.URL, "--out", l.dir)
	if rr.code != 1 || !strings.Contains(rr.stderr, "403") || !strings.Contains(rr.stderr, "certificate_revoked") {
		t.Errorf("renew of a revoked certificate: want exit 1 with 403 certificate_revoked:\n%s", rr)
	}
	oneLine(t, rr)
	if b, err := os.ReadFile(l.certFile()); err != nil || !bytes.Equal(b, l.cr.certRaw) {
		t.Errorf("a refused renewal changed cert.pem (%v)", err)
	}

	// Unknown serial through the admin socket: exit 1.
	ru := runCLI(t, "revoke", "--dir", ca.Dir, "--serial", revRandomSerial(t).Text(16), "--reason", "keyCompromise")
	if ru.code != 1 || !strings.Contains(ru.stderr, "unknown_certificate") {
		t.Errorf("unknown serial: want exit 1, unknown_certificate:\n%s", ru)
	}
	oneLine(t, ru)

	// Unknown reasons (and the two RFC 5280 reasons not offered): exit 2,
	// nothing revoked.
	for _, reason := range []string{"bogus", "certificateHold", "removeFromCRL", "KEYCOMPROMISE"} {
		for _, args := range [][]string{
			{"revoke", "--dir", ca.Dir, "--serial", other.serial, "--reason", reason},
			{"revoke", "--ca", ca.URL, "--out", other.dir, "--reason", reason},
		} {
			r := runCLI(t, args...)
			if r.code != 2 {
				t.Errorf("reason %q: want exit 2:\n%s", reason, r)
			}
			oneLine(t, r)
		}
	}
	if r := runCLI(t, "ocsp", "--cert", other.certFile()); r.code != 0 || r.stdout != "good\n" {
		t.Errorf("the bystander was revoked by refused commands:\n%s", r)
	}
}

// TestRevBadOCSPInput: garbage over real HTTP gets OCSP errors or 4xx,
// never a 5xx, and the daemon stays healthy.
func TestRevBadOCSPInput(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	ca.start()
	l := revEnroll(t, ca, "bad")
	issuer := l.cr.chain[0]
	base := "http://" + ca.HTTP + "/ocsp"
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	valid, err := ocsp.CreateRequest(l.cr.leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}

	wantStatus := func(what string, r apiResp, status ocsp.ResponseStatus) {
		t.Helper()
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/ocsp-response" {
			t.Errorf("%s: HTTP %d %q, want 200 application/ocsp-response: %q", what, r.status, r.header.Get("Content-Type"), r.body)
			return
		}
		_, err := ocsp.ParseResponse(r.body, nil)
		var re ocsp.ResponseError
		if !errors.As(err, &re) || re.Status != status {
			t.Errorf("%s: ParseResponse error %v, want ResponseError{Status: %v}", what, err, status)
		}
	}
	post := func(body []byte) apiResp {
		return do(t, hc, http.MethodPost, base, "application/ocsp-request", bytes.NewReader(body))
	}
	get := func(path string) apiResp { return do(t, hc, http.MethodGet, "http://"+ca.HTTP+path, "", nil) }
	b64 := base64.StdEncoding.EncodeToString

	garbage := make([]byte, 300)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	wantStatus("POST garbage", post(garbage), ocsp.Malformed)
	wantStatus("POST text", post([]byte("hello, OCSP")), ocsp.Malformed)
	wantStatus("POST empty", post(nil), ocsp.Malformed)
	for _, n := range []int{1, 2, 10, len(valid) / 2, len(valid) - 1} {
		wantStatus(fmt.Sprintf("POST truncated to %d bytes", n), post(valid[:n]), ocsp.Malformed)
		wantStatus(fmt.Sprintf("GET truncated to %d bytes", n), get("/ocsp/"+url.PathEscape(b64(valid[:n]))), ocsp.Malformed)
	}
	wantStatus("POST with trailing data", post(append(append([]byte{}, valid...), 0, 0)), ocsp.Malformed)
	wantStatus("GET bad base64", get("/ocsp/!!!not*base64~"), ocsp.Malformed)
	wantStatus("GET empty", get("/ocsp/"), ocsp.Malformed)
	wantStatus("GET base64 garbage", get("/ocsp/"+url.PathEscape(b64(garbage))), ocsp.Malformed)

	// An issuer the CA does not serve: unauthorized.
	fder, err := (&ocsp.Request{HashAlgorithm: crypto.SHA1, IssuerNameHash: garbage[:20], IssuerKeyHash: garbage[20:40], SerialNumber: big.NewInt(42)}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	wantStatus("POST foreign issuer", post(fder), ocsp.Unauthorized)

	// Too large: 413, with and without Content-Length.
	big17 := bytes.Repeat([]byte{0x30}, 17<<10)
	if r := post(big17); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST 17 KiB: %d, want 413", r.status)
	}
	if r := do(t, hc, http.MethodPost, base, "application/ocsp-request", io.MultiReader(bytes.NewReader(big17))); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST 17 KiB chunked: %d, want 413", r.status)
	}

	// A real request whose base64 holds "//", sent unescaped as RFC 5019
	// clients do: the mux must not clean the path.
	parsed, err := ocsp.ParseRequest(valid)
	if err != nil {
		t.Fatal(err)
	}
	var slashy string
	var slashySerial *big.Int
	for i := 0; i < 200000 && slashy == ""; i++ {
		q := *parsed
		q.SerialNumber = revRandomSerial(t)
		d, err := q.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if s := b64(d); strings.Contains(s, "//") {
			slashy, slashySerial = s, q.SerialNumber
		}
	}
	if slashy == "" {
		t.Fatal("found no request whose base64 holds //")
	}
	if r := get("/ocsp/" + slashy); r.status != http.StatusOK {
		t.Errorf("GET /ocsp/%s: %d %s", slashy, r.status, r.body)
	} else if resp, err := ocsp.ParseResponse(r.body, issuer); err != nil || resp.Status != ocsp.Unknown || resp.SerialNumber.Cmp(slashySerial) != 0 {
		t.Errorf("GET /ocsp/%s (unescaped //): err %v, want status unknown for serial %x", slashy, err, slashySerial)
		if err == nil {
			t.Errorf("got status %d for serial %x", resp.Status, resp.SerialNumber)
		}
	}
	for _, p := range []string{"/ocsp//" + url.PathEscape(b64(valid)), "//ocsp/" + url.PathEscape(b64(valid)), "/ocsp//", "//ocsp", "/ocsp/a//b//c=="} {
		if r := get(p); r.status >= 500 {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	if r := do(t, hc, http.MethodPut, base, "application/ocsp-request", bytes.NewReader(valid)); r.status != http.StatusMethodNotAllowed {
		t.Errorf("PUT /ocsp: %d, want 405", r.status)
	}

	// Still healthy, and still answering.
	if r := get("/health"); r.status != http.StatusOK {
		t.Errorf("GET /health after bad input: %d %s", r.status, r.body)
	}
	if resp := revPostOCSP(t, ca, l); resp.Status != ocsp.Good {
		t.Errorf("OCSP after bad input: status %d, want good", resp.Status)
	}
	if ca.proc.exited() || strings.Contains(ca.proc.log(), "panic") {
		t.Errorf("the daemon exited or panicked:\n%s", ca.proc.log())
	}
}

// TestRevLeafURLs: AIA (OCSP, caIssuers) and CRL DP come from
// public_urls.http, and the caIssuers URL serves the issuing CA.
func TestRevLeafURLs(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	// A public URL that differs from the listen address (same port).
	_, port, _ := strings.Cut(ca.HTTP, ":")
	ca.editConfig(func(cfg map[string]any) {
		cfg["public_urls"].(map[string]any)["http"] = "http://localhost:" + port
	})
	ca.start()
	pub := "http://localhost:" + port
	if _, p, _ := strings.Cut(ca.HTTP, ":"); p != port {
		pub = "http://" + ca.HTTP // start moved to other ports and rewrote public_urls
	}
	l := revEnroll(t, ca, "urls")
	issuer := l.cr.chain[0]
	ski := hex.EncodeToString(issuer.SubjectKeyId)
	leaf := l.cr.leaf
	if got, want := fmt.Sprint(leaf.OCSPServer, leaf.IssuingCertificateURL, leaf.CRLDistributionPoints),
		fmt.Sprint([]string{pub + "/ocsp"}, []string{pub + "/ca/" + ski + ".crt"}, []string{pub + "/crl/" + ski}); got != want {
		t.Errorf("leaf OCSP, caIssuers and CRL DP URLs %s, want %s", got, want)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for _, u := range leaf.IssuingCertificateURL {
		r := do(t, hc, http.MethodGet, u, "", nil)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/pkix-cert" || !bytes.Equal(r.body, issuer.Raw) {
			t.Errorf("GET %s: %d %q, %d bytes; want the issuing CA (chain[0]) in DER", u, r.status, r.header.Get("Content-Type"), len(r.body))
		}
	}
	// The AIA OCSP URL and the CRL DP answer too, through the public name.
	if r := runCLI(t, "ocsp", "--cert", l.certFile()); r.code != 0 || r.stdout != "good\n" {
		t.Errorf("agentca ocsp through the AIA URL:\n%s", r)
	}
	revFetchCRL(t, hc, leaf.CRLDistributionPoints[0])
	if r := do(t, hc, http.MethodGet, pub+"/ca/"+strings.Repeat("ab", 20)+".crt", "", nil); r.status != http.StatusNotFound {
		t.Errorf("GET of an unknown issuer: %d, want 404", r.status)
	}
}
