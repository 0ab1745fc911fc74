package test

// End-to-end checks of the inputs the CA must not let through (items 7-10
// of the hardening issue), with the real binary and the openssl command.

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOCSPSeveralCertificatesOpenSSL: openssl ocsp naming two
// certificates gets malformedRequest, not an answer for the first only.
func TestOCSPSeveralCertificatesOpenSSL(t *testing.T) {
	t.Parallel()
	requireOpenSSL(t)
	ca := newCA(t, caOptions{})
	ca.start()
	a, b := revEnroll(t, ca, "a"), revEnroll(t, ca, "b")
	url := "http://" + ca.HTTP + "/ocsp"
	for name, args := range map[string][]string{
		"two -cert":   {"-cert", a.leafPEM, "-cert", b.leafPEM},
		"two -serial": {"-serial", "0x" + a.serial, "-serial", "0x" + b.serial},
	} {
		o := revOpenSSL(t, append([]string{"ocsp", "-url", url, "-issuer", a.issuer, "-CAfile", ca.rootsFile(), "-no_nonce", "-timeout", "10"}, args...)...)
		if !strings.Contains(strings.ToLower(o.stdout+o.stderr), "malformedrequest") {
			t.Errorf("%s: want a malformedRequest answer\n%s", name, o)
		}
		if revStatusLine.MatchString(o.stdout) {
			t.Errorf("%s: a status was printed for a certificate\n%s", name, o)
		}
	}
	// One certificate is still answered.
	if st, o := revOCSP(t, revQuery{url: url, issuer: a.issuer, roots: ca.rootsFile(), cert: a.leafPEM}); st != "good" {
		t.Fatalf("one certificate: %s\n%s", st, o)
	}
}

// TestNoSecretInDaemonLog: a join token sent in every field of the sign,
// challenge and token-create requests (the provisioner and token swapped,
// among others) appears in no response and no line of the daemon's log.
func TestNoSecretInDaemonLog(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	ca.start()
	secret := ca.token("spiffe://example.org/secret/holder")
	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	csr := csrPEM(t, newECKey(t), nil)
	bodies := map[string]map[string]string{
		"/v1/sign swapped":  signBody(secret, "join", csr, ""),
		"/v1/sign ttl":      signBody("join", "agentca-jt-x", csr, secret),
		"/v1/sign task":     {"provisioner": "join", "token": "agentca-jt-x", "csr": csr, "task": secret + "/"},
		"/v1/sign csr":      signBody("join", "agentca-jt-x", secret, ""),
		"/v1/sign field":    {secret: "x"},
		"/v1/challenge":     {"provisioner": secret},
		"/v1/renew no cert": {"ttl": secret},
	}
	for name, body := range bodies {
		path, _, _ := strings.Cut(name, " ")
		r := postJSON(t, hc, ca.URL+path, body)
		if r.status < 400 {
			t.Errorf("%s: status %d", name, r.status)
		}
		if strings.Contains(string(r.body), secret[len(secret)/2:]) {
			t.Errorf("%s: the response echoes the token: %s", name, r.body)
		}
	}
	// Through the CLI and the admin socket.
	for _, args := range [][]string{
		{"token", "create", "--dir", ca.Dir, "--spiffe-id", "spiffe://example.org/x", "--provisioner", secret},
		{"token", "create", "--dir", ca.Dir, "--spiffe-id", secret},
		{"revoke", "--dir", ca.Dir, "--serial", secret},
	} {
		r := runCLI(t, args...)
		if r.code == 0 || strings.Contains(r.stdout+r.stderr, secret[len(secret)/2:]) {
			t.Errorf("%v: exit %d, or the token echoed:\n%s", args[:2], r.code, r)
		}
	}
	// The unknown provisioner is named by its length and hash.
	r := postJSON(t, hc, ca.URL+"/v1/sign", signBody(secret, "join", csr, ""))
	if e := wantError(t, r, http.StatusBadRequest, "unknown_provisioner"); !strings.Contains(e.Message, "54 bytes, sha256 ") {
		t.Errorf("message %q", e.Message)
	}
	ca.stop()
	log, err := os.ReadFile(ca.proc.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), secret[len(secret)/2:]) {
		t.Fatalf("the daemon's log holds the token:\n%s", log)
	}
	if !strings.Contains(string(log), "unknown_provisioner") {
		t.Fatalf("the refusals were not logged:\n%s", log)
	}
}

// TestNoSecretInTokenEndpoint: a join token sent in every field of an
// access-token request is in no answer and no log line.
func TestNoSecretInTokenEndpoint(t *testing.T) {
	t.Parallel()
	c := newTokenCA(t)
	c.start()
	secret := c.token("spiffe://example.org/secret/holder")
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	hc := c.client(readCreds(t, dir).tlsCert())
	defer hc.CloseIdleConnections()
	base := url.Values{"grant_type": {"client_credentials"}, "scope": {"tools.read"}, "resource": {"https://tools.example.org"}}
	for _, field := range []string{"grant_type", "scope", "resource", "audience", "ttl", "task", "client_id", secret} {
		form := url.Values{}
		for k, v := range base {
			form[k] = v
		}
		form.Set(field, secret)
		r, err := tryDo(hc, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		if field != secret && r.status < 400 {
			t.Errorf("%s: status %d", field, r.status)
		}
		if strings.Contains(string(r.body), secret[len(secret)/2:]) {
			t.Errorf("%s: the answer echoes the token: %s", field, r.body)
		}
	}
	c.stop()
	if log := c.proc.log(); strings.Contains(log, secret[len(secret)/2:]) {
		t.Fatalf("the daemon's log holds the token:\n%s", log)
	}
}
