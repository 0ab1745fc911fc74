package test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSignBadInput sends POST /v1/sign requests that must be refused, each
// with its exact status and error code, and checks that refusals neither
// spend the token nor hurt the daemon.
func TestSignBadInput(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{}) // leaf.max_ttl is the default 1h
	ca.start()
	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	const id = "spiffe://example.org/agent/bad"
	signURL := ca.URL + "/v1/sign"

	// The expired token first: it needs a second to expire.
	expiredTok, expiresAt := ca.tokenJSON(id, "--ttl", "1s")

	// A token that stays valid through all the refusals below: a refused
	// request must not spend it.
	tok := ca.token(id)
	goodCSR := csrPEM(t, newECKey(t), nil)

	// A used token.
	usedTok := ca.token(id)
	wantIssued(t, postJSON(t, hc, signURL, signBody("join", usedTok, csrPEM(t, newECKey(t), nil), "")))

	// A CSR with a tampered signature: flip bits in the last byte of the
	// signature, which ends the DER.
	tampered := csrDER(t, newECKey(t), nil)
	tampered[len(tampered)-1] ^= 0x55
	good := csrDER(t, newECKey(t), nil)
	truncatedPEM := pemCSR(good)
	truncatedPEM = truncatedPEM[:len(truncatedPEM)/2]

	raw := func(s string) io.Reader { return strings.NewReader(s) }
	jsonBody := func(v any) io.Reader {
		b := mustJSON(t, v)
		return bytes.NewReader(b)
	}
	big := fmt.Sprintf(`{"provisioner":"join","token":%q,"csr":%q}`, tok, strings.Repeat("A", 70<<10))

	cases := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        io.Reader
		status      int
		code        string
	}{
		{"garbage CSR", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, "this is not a CSR", "")), 400, "bad_csr"},
		{"garbage in a PEM block", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, pemCSR([]byte("garbage")), "")), 400, "bad_csr"},
		{"truncated CSR DER", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, pemCSR(good[:len(good)/2]), "")), 400, "bad_csr"},
		{"truncated CSR PEM", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, truncatedPEM, "")), 400, "bad_csr"},
		{"CSR signature does not verify", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, pemCSR(tampered), "")), 400, "bad_csr"},
		{"RSA-1024 key", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, csrPEM(t, rsaKey(t, 1024), nil), "")), 400, "bad_key"},
		{"ECDSA P-224 key", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, p224CSR(t), "")), 400, "bad_key"},
		{"unknown provisioner", "POST", "/v1/sign", "application/json", jsonBody(signBody("nope", tok, goodCSR, "")), 400, "unknown_provisioner"},
		{"ttl 25h above max_ttl 1h", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "25h")), 400, "bad_ttl"},
		{"ttl 2h above max_ttl 1h", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "2h")), 400, "bad_ttl"},
		{"ttl below min_ttl", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "1s")), 400, "bad_ttl"},
		{"ttl not a duration", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "soon")), 400, "bad_ttl"},
		{"negative ttl", "POST", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "-5m")), 400, "bad_ttl"},
		{"body over 64 KiB", "POST", "/v1/sign", "application/json", raw(big), 413, "request_too_large"},
		{"body over 64 KiB, chunked", "POST", "/v1/sign", "application/json", io.MultiReader(raw(big)), 413, "request_too_large"},
		{"non-JSON body", "POST", "/v1/sign", "application/json", raw("provisioner=join&token=x"), 400, "bad_request"},
		{"JSON array", "POST", "/v1/sign", "application/json", raw(`[]`), 400, "bad_request"},
		{"unknown field", "POST", "/v1/sign", "application/json", raw(`{"provisioner":"join","token":"x","csr":"y","spiffe_id":"spiffe://example.org/admin"}`), 400, "bad_request"},
		{"empty body", "POST", "/v1/sign", "application/json", raw(""), 400, "bad_request"},
		{"missing token", "POST", "/v1/sign", "application/json", jsonBody(map[string]string{"provisioner": "join", "csr": goodCSR}), 400, "bad_request"},
		{"form content type", "POST", "/v1/sign", "application/x-www-form-urlencoded", raw("a=b"), 415, "unsupported_media_type"},
		{"GET /v1/sign", "GET", "/v1/sign", "", nil, 405, "method_not_allowed"},
		{"PUT /v1/sign", "PUT", "/v1/sign", "application/json", jsonBody(signBody("join", tok, goodCSR, "")), 405, "method_not_allowed"},
		{"POST /health", "POST", "/health", "application/json", raw("{}"), 405, "method_not_allowed"},
		{"unknown path", "GET", "/v1/nope", "", nil, 404, "not_found"},
		{"unknown path under /", "POST", "/sign", "application/json", raw("{}"), 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, hc, tc.method, ca.URL+tc.path, tc.contentType, tc.body)
			wantError(t, r, tc.status, tc.code)
			if tc.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
		})
	}

	// Wrong, expired and used tokens: 401 with one and the same message,
	// so a caller cannot tell which.
	waitUntil(expiresAt.Add(100 * time.Millisecond))
	wrong := "agentca-jt-" + base64.RawURLEncoding.EncodeToString(randomBytes(t, 32))
	msgs := map[string]string{}
	for _, tc := range []struct{ name, token string }{
		{"wrong token", wrong},
		{"malformed token", "hello"},
		{"expired token", expiredTok},
		{"used token", usedTok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := postJSON(t, hc, signURL, signBody("join", tc.token, csrPEM(t, newECKey(t), nil), ""))
			msgs[tc.name] = wantError(t, r, http.StatusUnauthorized, "unauthorized").Message
		})
	}
	for name, m := range msgs {
		if m != msgs["wrong token"] {
			t.Errorf("the %s refusal says %q, the wrong token's %q: an oracle", name, m, msgs["wrong token"])
		}
	}

	// None of the refusals spent tok or broke the daemon.
	_, leaf := wantIssued(t, postJSON(t, hc, signURL, signBody("join", tok, goodCSR, "")))
	if got := spiffeIDOf(t, leaf); got != id {
		t.Errorf("issued %s, want %s", got, id)
	}
	for _, u := range []string{ca.URL + "/health", "http://" + ca.HTTP + "/health"} {
		if r := do(t, hc, http.MethodGet, u, "", nil); r.status != http.StatusOK {
			t.Errorf("GET %s after the bad requests: %d %s", u, r.status, r.body)
		}
	}
}

// TestInitRefusesExistingCA runs init over an existing CA: exit 1, one
// line on stderr, and not one byte of the existing CA changed.
func TestInitRefusesExistingCA(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	before := snapshot(t, ca.Dir)
	if _, ok := before["roots.pem"]; !ok {
		t.Fatalf("no roots.pem in %v", before)
	}
	r := runCLI(t, "init", "--dir", ca.Dir, "--trust-domain", "other.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if r.code != 1 {
		t.Errorf("init over an existing CA: want exit 1:\n%s", r)
	}
	oneLine(t, r)
	after := snapshot(t, ca.Dir)
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s appeared", name)
		}
	}
	// A directory holding only a config is a CA too.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "agentca.json"), []byte("{}\n"))
	r = runCLI(t, "init", "--dir", dir, "--trust-domain", "example.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if r.code != 1 {
		t.Errorf("init over a directory with agentca.json: want exit 1:\n%s", r)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "agentca.json")); string(b) != "{}\n" {
		t.Errorf("agentca.json was overwritten: %q", b)
	}
	// The refused init left the state directory startable.
	ca.start()
}

// snapshot reads every regular file under dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[rel] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUsageErrors checks exit status 2 and one line on stderr for command
// lines that are wrong.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"enroll", "--root", "roots.pem", "--token", "t", "--out", dir},
		{"enroll", "--ca", "https://127.0.0.1:1", "--root", "r.pem", "--fingerprint", "00", "--token", "t", "--out", dir},
		{"enroll", "--ca", "https://127.0.0.1:1", "--root", "r.pem", "--out", dir},
		{"enroll", "--no-such-flag"},
		{"renew", "--out", dir},
		{"init", "--dir", dir},
		{"token", "create", "--dir", dir},
		{"workloads", "create", "--dir", dir, "--spiffe-id", "spiffe://example.org/w"},
		{"workloads", "create", "--dir", dir, "--spiffe-id", "spiffe://example.org/w", "--selector", "unix:uid:1"},
		{"workloads", "delete", "--dir", dir},
		{"agent", "--ca", "https://127.0.0.1:1", "--root", "r.pem", "--token", "t", "--data-dir", dir},
		{"agent", "--ca", "https://127.0.0.1:1", "--root", "r.pem", "--token", "t", "--data-dir", dir, "--socket", dir + "/s", "--kubelet", "https://127.0.0.1:10250"},
		{"no-such-command"},
	} {
		r := runCLI(t, args...)
		if r.code != 2 {
			t.Errorf("want exit 2:\n%s", r)
		}
		oneLine(t, r)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("usage errors wrote into %s: %v", dir, entries)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCLIFailures checks exit status 1 with one line on stderr for
// commands that are well formed but cannot succeed.
func TestCLIFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	closed := "https://" + freeAddr(t) // nothing listens there
	for _, args := range [][]string{
		{"token", "create", "--dir", empty, "--spiffe-id", "spiffe://example.org/a"},
		{"certs", "list", "--dir", empty},
		{"serve", "--dir", empty},
		{"enroll", "--ca", closed, "--root", filepath.Join(dir, "missing.pem"), "--token", "t", "--out", filepath.Join(dir, "out")},
		{"enroll", "--ca", closed, "--fingerprint", sha256Hex(nil), "--token", "t", "--out", filepath.Join(dir, "out")},
		{"renew", "--ca", closed, "--out", empty},
	} {
		r := runCLI(t, args...)
		if r.code != 1 {
			t.Errorf("want exit 1:\n%s", r)
		}
		oneLine(t, r)
	}
}
