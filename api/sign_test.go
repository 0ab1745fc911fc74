package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

func TestSign(t *testing.T) {
	e := newEnv(t, envOptions{})
	const id = "spiffe://example.org/agent/happy"
	key := mustKey(t, ca.Ed25519)
	tok := e.token(id)
	before := e.clock.Now().Truncate(time.Second)
	r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: tok, CSR: csrFor(t, key, nil), TTL: "10m"})
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"certificate", "chain", "serial", "spiffe_id", "not_before", "not_after"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("SignResponse has no %q field: %s", f, r.body)
		}
	}
	got := enrolledFrom(t, key, r)
	leaf := got.leaf
	if got.resp.SPIFFEID != id || len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Errorf("spiffe_id %q, URIs %v; want %s", got.resp.SPIFFEID, leaf.URIs, id)
	}
	if got.resp.Serial != hex.EncodeToString(leaf.SerialNumber.Bytes()) {
		t.Errorf("serial %q, certificate serial %x", got.resp.Serial, leaf.SerialNumber.Bytes())
	}
	if !got.resp.NotBefore.Equal(leaf.NotBefore) || !got.resp.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("not_before/not_after %s/%s, certificate %s/%s", got.resp.NotBefore, got.resp.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}
	if want := before.Add(10 * time.Minute); !leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s (ttl 10m)", leaf.NotAfter, want)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	if len(got.resp.Chain) != 1 {
		t.Fatalf("chain has %d certificates, want the issuing CA", len(got.resp.Chain))
	}
	if issuing := parsePEMCert(t, got.resp.Chain[0]); !issuing.Equal(e.h.Issuing) {
		t.Error("chain[0] is not the issuing CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.h.Root)
	inter := x509.NewCertPool()
	inter.AddCert(parsePEMCert(t, got.resp.Chain[0]))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: e.clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify with the chain: %v", err)
	}
	rec, err := e.store.Certificate(context.Background(), got.resp.Serial)
	if err != nil || !bytes.Equal(rec.DER, leaf.Raw) || rec.Provisioner != "join" {
		t.Fatalf("record = %+v, %v", rec, err)
	}

	// The token is spent (for any other key: a retry with the same key
	// gets this certificate again, TestSignRetryAfterDroppedConnection).
	again := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: tok, CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
	apiError(t, again, http.StatusUnauthorized, api.CodeUnauthorized)

	// One audit line per request, and the token is in none of them.
	logs := e.logs.String()
	if n := strings.Count(logs, `"msg":"audit"`); n != 2 {
		t.Errorf("%d audit lines for 2 requests:\n%s", n, logs)
	}
	if strings.Contains(logs, tok) || strings.Contains(logs, strings.TrimPrefix(tok, "agentca-jt-")) {
		t.Errorf("the audit log contains the join token:\n%s", logs)
	}
	if !strings.Contains(logs, got.resp.Serial) {
		t.Errorf("the audit log does not name the serial:\n%s", logs)
	}
}

func TestSignDefaultTTL(t *testing.T) {
	e := newEnv(t, envOptions{})
	got := e.enroll("spiffe://example.org/agent/default", "")
	if life := got.leaf.NotAfter.Sub(got.leaf.NotBefore); life != 6*time.Minute {
		t.Fatalf("lifetime %s, want 5m default + 1m backdate", life)
	}
}

// signCase is one refused /v1/sign request.
type signCase struct {
	name   string
	status int
	code   string
	// build returns the request body and content type; it may change e.
	build func(t *testing.T, e *env) ([]byte, string)
	// keepsToken: the token in the body must still work afterwards.
	keepsToken bool
}

func signBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func validSign(t *testing.T, e *env, edit func(*wire.SignRequest)) ([]byte, string) {
	req := wire.SignRequest{Provisioner: "join", Token: e.token("spiffe://example.org/agent/x"), CSR: csrFor(t, mustKey(t, ca.ECP256), nil)}
	if edit != nil {
		edit(&req)
	}
	e.lastToken = req.Token
	return signBody(t, req), "application/json"
}

func TestSignRefusals(t *testing.T) {
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []signCase{
		{name: "missing csr", status: 400, code: api.CodeBadRequest, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.CSR = "" })
			}},
		{name: "missing token", status: 400, code: api.CodeBadRequest,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.Token = "" })
			}},
		{name: "missing provisioner", status: 400, code: api.CodeBadRequest, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.Provisioner = "" })
			}},
		{name: "unknown field", status: 400, code: api.CodeBadRequest, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, ct := validSign(t, e, nil)
				return append(b[:len(b)-1], []byte(`,"spiffe_id":"spiffe://example.org/admin"}`)...), ct
			}},
		{name: "trailing data", status: 400, code: api.CodeBadRequest, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, ct := validSign(t, e, nil)
				return append(b, []byte(` {"more":1}`)...), ct
			}},
		{name: "not JSON", status: 400, code: api.CodeBadRequest,
			build: func(t *testing.T, e *env) ([]byte, string) { return []byte("provisioner=join"), "application/json" }},
		{name: "empty body", status: 400, code: api.CodeBadRequest,
			build: func(t *testing.T, e *env) ([]byte, string) { return nil, "application/json" }},
		{name: "JSON array", status: 400, code: api.CodeBadRequest,
			build: func(t *testing.T, e *env) ([]byte, string) { return []byte(`[]`), "application/json" }},
		{name: "text/plain", status: 415, code: api.CodeUnsupportedMedia, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, _ := validSign(t, e, nil)
				return b, "text/plain"
			}},
		{name: "form", status: 415, code: api.CodeUnsupportedMedia, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, _ := validSign(t, e, nil)
				return b, "application/x-www-form-urlencoded"
			}},
		{name: "garbage csr", status: 400, code: api.CodeBadCSR, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) {
					r.CSR = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
				})
			}},
		{name: "certificate instead of csr", status: 400, code: api.CodeBadCSR, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.CSR = string(e.srv.Trust().RootsPEM) })
			}},
		{name: "RSA-1024 key", status: 400, code: api.CodeBadKey, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.CSR = csrFor(t, rsa1024, nil) })
			}},
		{name: "ttl not a duration", status: 400, code: api.CodeBadTTL, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.TTL = "ten minutes" })
			}},
		{name: "ttl negative", status: 400, code: api.CodeBadTTL, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.TTL = "-5m" })
			}},
		{name: "ttl above provisioner max", status: 400, code: api.CodeBadTTL, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.TTL = "2h" })
			}},
		{name: "ttl below min", status: 400, code: api.CodeBadTTL, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.TTL = "10s" })
			}},
		{name: "unknown provisioner", status: 400, code: api.CodeUnknownProvisioner, keepsToken: true,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.Provisioner = "k8s" })
			}},
		{name: "malformed token", status: 401, code: api.CodeUnauthorized,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.Token = "hunter2" })
			}},
		{name: "unknown token", status: 401, code: api.CodeUnauthorized,
			build: func(t *testing.T, e *env) ([]byte, string) {
				return validSign(t, e, func(r *wire.SignRequest) { r.Token = "agentca-jt-" + strings.Repeat("Q", 43) })
			}},
		{name: "used token", status: 401, code: api.CodeUnauthorized,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, _ := validSign(t, e, nil)
				if r := e.postJSON(e.client(nil), "/v1/sign", b); r.status != http.StatusCreated {
					t.Fatalf("first use: %d %s", r.status, r.body)
				}
				// Again for another key (the same key would be a
				// retry, answered with the certificate).
				return validSign(t, e, func(r *wire.SignRequest) { r.Token = e.lastToken })
			}},
		{name: "expired token", status: 401, code: api.CodeUnauthorized,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, ct := validSign(t, e, nil)
				e.clock.Advance(16 * time.Minute)
				return b, ct
			}},
		{name: "identity outside the trust domain", status: 403, code: api.CodeIdentityNotAllowed,
			build: func(t *testing.T, e *env) ([]byte, string) {
				// jointoken.Create trusts its caller (the admin API
				// validates); the CA must still refuse.
				c, err := e.join.Create(context.Background(), "spiffe://other.org/agent", 0, 1)
				if err != nil {
					t.Fatal(err)
				}
				return validSign(t, e, func(r *wire.SignRequest) { r.Token = c[0].Token })
			}},
		{name: "store closed", status: 503, code: api.CodeUnavailable,
			build: func(t *testing.T, e *env) ([]byte, string) {
				b, ct := validSign(t, e, nil)
				e.store.Close()
				return b, ct
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			body, ct := tt.build(t, e)
			r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", ct, bytes.NewReader(body))
			got := apiError(t, r, tt.status, tt.code)
			if tt.status == 401 && got.Message != "the attestation was not accepted" {
				t.Errorf("401 message %q tells why; want the one generic message", got.Message)
			}
			if n := countCerts(t, e); n > 1 || (tt.name != "used token" && n != 0) {
				t.Errorf("store holds %d certificates after a refusal", n)
			}
			if tt.keepsToken {
				tok := e.lastToken
				ok := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: tok, CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
				if ok.status != http.StatusCreated {
					t.Errorf("the refused request spent the token: %d %s", ok.status, ok.body)
				}
			}
			if n := strings.Count(e.logs.String(), `"msg":"audit"`); n < 1 {
				t.Errorf("no audit line for a refusal")
			}
		})
	}
}

func TestSignInternalError(t *testing.T) {
	// A failing randomness source is an internal error: 500 with a
	// message that says nothing about the cause.
	e := newEnv(t, envOptions{rand: iotest.ErrReader(errors.New("entropy source on fire"))})
	body, ct := validSign(t, e, nil)
	r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", ct, bytes.NewReader(body))
	got := apiError(t, r, http.StatusInternalServerError, api.CodeInternal)
	if strings.Contains(got.Message, "fire") {
		t.Errorf("500 message leaks the cause: %q", got.Message)
	}
	if !strings.Contains(e.logs.String(), "fire") {
		t.Errorf("the cause is not in the log:\n%s", e.logs.String())
	}
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(nil)
	tests := []struct {
		name, method, path string
		status             int
		code, allow        string
	}{
		{"GET sign", http.MethodGet, "/v1/sign", 405, api.CodeMethodNotAllowed, "POST"},
		{"PUT renew", http.MethodPut, "/v1/renew", 405, api.CodeMethodNotAllowed, "POST"},
		{"POST roots", http.MethodPost, "/v1/roots", 405, api.CodeMethodNotAllowed, "GET"},
		{"DELETE bundle", http.MethodDelete, "/v1/bundle", 405, api.CodeMethodNotAllowed, "GET"},
		{"unknown path", http.MethodGet, "/v1/nope", 404, api.CodeNotFound, ""},
		{"root", http.MethodGet, "/", 404, api.CodeNotFound, ""},
		{"admin on HTTPS needs a client certificate", http.MethodPost, "/admin/v1/tokens", 401, api.CodeClientCertRequired, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, tt.method, e.ts.URL+tt.path, "", nil)
			apiError(t, r, tt.status, tt.code)
			if got := r.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	// A valid request padded with whitespace to exactly MaxBody bytes is
	// accepted; one byte more is refused.
	padded := func(n int) []byte {
		b, _ := validSign(t, e, nil)
		if len(b) > n {
			t.Fatalf("request is already %d bytes", len(b))
		}
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	tests := []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"exactly 64 KiB", api.MaxBody, false, http.StatusCreated},
		{"64 KiB + 1", api.MaxBody + 1, false, http.StatusRequestEntityTooLarge},
		{"1 MiB", 1 << 20, false, http.StatusRequestEntityTooLarge},
		// Without Content-Length the limit must hold too, even when
		// what lies beyond 64 KiB is whitespace after the object.
		{"exactly 64 KiB chunked", api.MaxBody, true, http.StatusCreated},
		{"64 KiB + 1 chunked", api.MaxBody + 1, true, http.StatusRequestEntityTooLarge},
		{"1 MiB chunked", 1 << 20, true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(padded(tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // hides the length: Transfer-Encoding: chunked
			}
			r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", "application/json", body)
			if tt.status == http.StatusCreated {
				if r.status != http.StatusCreated {
					t.Fatalf("status %d, want 201: %s", r.status, r.body)
				}
				return
			}
			apiError(t, r, tt.status, api.CodeTooLarge)
		})
	}
	t.Run("large garbage chunked", func(t *testing.T) {
		r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", "application/json",
			io.MultiReader(strings.NewReader(`{"token":"`), strings.NewReader(strings.Repeat("A", 100<<10)), strings.NewReader(`"}`)))
		apiError(t, r, http.StatusRequestEntityTooLarge, api.CodeTooLarge)
	})
}

// TestBodyShape: what follows the JSON object must be white space, an
// empty body is not an object, and a body shorter than its declared
// length is refused, all with 400.
func TestBodyShape(t *testing.T) {
	e := newEnv(t, envOptions{})
	body, _ := validSign(t, e, nil)
	for _, tt := range []struct {
		name string
		body []byte
		want string
	}{
		{"trailing object", append(slices.Clone(body), []byte(` {}`)...), "data after the JSON object"},
		{"trailing garbage", append(slices.Clone(body), []byte("\n x")...), "data after the JSON object"},
		{"empty", nil, "not the expected JSON object"},
		{"two objects", []byte(`{}{}`), "data after the JSON object"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", "application/json", bytes.NewReader(tt.body))
			if got := apiError(t, r, http.StatusBadRequest, api.CodeBadRequest); !strings.Contains(got.Message, tt.want) {
				t.Fatalf("message %q, want it to say %q", got.Message, tt.want)
			}
		})
	}
	// A client that declares more than it sends (the connection cut
	// short): the handler reads to the declared length and refuses.
	t.Run("shorter than Content-Length", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodPost, "/v1/sign", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = int64(len(body) + 10)
		w := httptest.NewRecorder()
		e.srv.HTTPSHandler().ServeHTTP(w, req)
		r := &response{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
		if got := apiError(t, r, http.StatusBadRequest, api.CodeBadRequest); !strings.Contains(got.Message, "reading the body") {
			t.Fatalf("message %q, want it to say reading the body failed", got.Message)
		}
	})
}

func TestContentTypeIsCaseInsensitive(t *testing.T) {
	// RFC 9110 §8.3.1: type and subtype are case-insensitive.
	e := newEnv(t, envOptions{})
	body, _ := validSign(t, e, nil)
	r := do(t, e.client(nil), http.MethodPost, e.ts.URL+"/v1/sign", "Application/JSON; charset=utf-8", bytes.NewReader(body))
	if r.status != http.StatusCreated {
		t.Fatalf("Content-Type Application/JSON: %d %s, want 201", r.status, r.body)
	}
}

func TestParseTTL(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"90s", 90 * time.Second, true},
		{"0s", 0, false},
		{"-1m", 0, false},
		{"5", 0, false},
		{"five", 0, false},
		{strings.Repeat("9", 100) + "h", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, e := api.ParseTTL(tt.in)
			if tt.ok {
				if e != nil || got != tt.want {
					t.Fatalf("ParseTTL(%q) = %s, %v; want %s", tt.in, got, e, tt.want)
				}
				return
			}
			if e == nil || e.Status != http.StatusBadRequest || e.Code != api.CodeBadTTL {
				t.Fatalf("ParseTTL(%q) = %s, %v; want 400 bad_ttl", tt.in, got, e)
			}
			if len(e.Message) > 120 {
				t.Fatalf("message echoes the whole input: %q", e.Message)
			}
		})
	}
}

func TestNewRequiresOptions(t *testing.T) {
	e := newEnv(t, envOptions{})
	full := api.Options{Authority: e.authority, Store: e.store, Trust: e.srv.Trust(), Provisioners: e.provs}
	tests := []struct {
		name string
		edit func(*api.Options)
	}{
		{"no authority", func(o *api.Options) { o.Authority = nil }},
		{"no store", func(o *api.Options) { o.Store = nil }},
		{"no trust", func(o *api.Options) { o.Trust = nil }},
		{"no provisioners", func(o *api.Options) { o.Provisioners = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := full
			tt.edit(&o)
			if s, err := api.New(o); err == nil {
				t.Fatalf("New = %v, want an error", s)
			}
		})
	}
	if _, err := api.New(full); err != nil {
		t.Fatalf("New with every option: %v", err)
	}
}

func countCerts(t *testing.T, e *env) int {
	t.Helper()
	recs, err := e.store.ListCertificates(context.Background(), store.ListOptions{})
	if errors.Is(err, store.ErrClosed) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}
