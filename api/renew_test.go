package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
)

func TestRenew(t *testing.T) {
	const id = "spiffe://example.org/agent/renew"
	tests := []struct {
		name   string
		body   func(t *testing.T) (any, crypto.Signer) // body, and the new key (nil: same key)
		newKey bool
	}{
		{"empty body keeps the key", func(t *testing.T) (any, crypto.Signer) { return []byte{}, nil }, false},
		{"empty object keeps the key", func(t *testing.T) (any, crypto.Signer) { return []byte(`{}`), nil }, false},
		{"ttl only", func(t *testing.T) (any, crypto.Signer) { return wire.RenewRequest{TTL: "20m"}, nil }, false},
		{"new key", func(t *testing.T) (any, crypto.Signer) {
			k := mustKey(t, ca.ECP384)
			return wire.RenewRequest{CSR: csrFor(t, k, nil)}, k
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			old := e.enroll(id, "")
			body, newKey := tt.body(t)
			r := e.postJSON(e.client(old.tls), "/v1/renew", body)
			if r.status != http.StatusCreated {
				t.Fatalf("renew: %d %s", r.status, r.body)
			}
			key := old.key
			if newKey != nil {
				key = newKey
			}
			got := enrolledFrom(t, key, r)
			if got.resp.SPIFFEID != id || got.leaf.URIs[0].String() != id {
				t.Errorf("renewed for %q, want %s", got.resp.SPIFFEID, id)
			}
			if got.resp.Serial == old.resp.Serial {
				t.Error("renewal reused the serial")
			}
			if !got.leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Errorf("renewed certificate is not for the expected key (new key: %v)", tt.newKey)
			}
			if b, ok := body.(wire.RenewRequest); ok && b.TTL == "20m" {
				if life := got.leaf.NotAfter.Sub(got.leaf.NotBefore); life != 21*time.Minute {
					t.Errorf("lifetime %s, want 20m + 1m backdate", life)
				}
			}
			rec, err := e.store.Certificate(context.Background(), got.resp.Serial)
			if err != nil {
				t.Fatal(err)
			}
			if rec.RenewedFrom != old.resp.Serial || rec.Provisioner != "join" || rec.SPIFFEID != id {
				t.Errorf("record = %+v, want renewed_from %s by join", rec, old.resp.Serial)
			}
			// The renewed certificate renews in turn.
			again := e.postJSON(e.client(got.tls), "/v1/renew", []byte{})
			if again.status != http.StatusCreated {
				t.Fatalf("second renewal: %d %s", again.status, again.body)
			}
		})
	}
}

func TestRenewKeepsRecordedIdentity(t *testing.T) {
	e := newEnv(t, envOptions{})
	const id = "spiffe://example.org/agent/honest"
	old := e.enroll(id, "")
	k := mustKey(t, ca.ECP256)
	evil, _ := url.Parse("spiffe://example.org/admin/ops")
	csr := csrFor(t, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin"}, URIs: []*url.URL{evil},
		DNSNames: []string{"ca.example.org"}})
	r := e.postJSON(e.client(old.tls), "/v1/renew", wire.RenewRequest{CSR: csr})
	if r.status != http.StatusCreated {
		t.Fatalf("renew: %d %s", r.status, r.body)
	}
	got := enrolledFrom(t, k, r)
	if got.resp.SPIFFEID != id || len(got.leaf.URIs) != 1 || got.leaf.URIs[0].String() != id {
		t.Errorf("identity %q / %v, want %s from the record", got.resp.SPIFFEID, got.leaf.URIs, id)
	}
	if len(got.leaf.DNSNames) != 0 || got.leaf.Subject.CommonName != "" {
		t.Errorf("the CSR's names leaked into the certificate: %v %q", got.leaf.DNSNames, got.leaf.Subject.CommonName)
	}
}

func TestRenewRefusals(t *testing.T) {
	const id = "spiffe://example.org/agent/renew"
	tests := []struct {
		name   string
		status int
		code   string
		// setup enrolls and returns the client certificate to present
		// (nil: none) and the body.
		setup func(t *testing.T, e *env) (*tls.Certificate, any)
	}{
		{"no client certificate", 401, api.CodeClientCertRequired,
			func(t *testing.T, e *env) (*tls.Certificate, any) { e.enroll(id, ""); return nil, []byte{} }},
		{"certificate of another CA", 401, api.CodeUnknownCertificate,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				h, err := ca.NewHierarchy("other", ca.ECP256, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				other := newEnv(t, envOptions{hierarchy: h})
				return other.enroll(id, "").tls, []byte{}
			}},
		{"self-signed certificate", 401, api.CodeUnknownCertificate,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				h, err := ca.NewHierarchy("self", ca.ECP256, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return &tls.Certificate{Certificate: [][]byte{h.Root.Raw}, PrivateKey: h.RootKey}, []byte{}
			}},
		{"chains but was never issued here", 401, api.CodeUnknownCertificate,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				// Same issuing CA, another store: a certificate this
				// CA's records do not know.
				twin := newEnv(t, envOptions{hierarchy: e.h})
				return twin.enroll(id, "").tls, []byte{}
			}},
		{"recorded serial, other bytes", 401, api.CodeUnknownCertificate,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				// Both CAs draw the same serial; only one certificate
				// with it is recorded here.
				e2 := newEnv(t, envOptions{rand: repeatReader(0x5a)})
				twin := newEnv(t, envOptions{hierarchy: e2.h, rand: repeatReader(0x5a)})
				mine := e2.enroll(id, "")
				theirs := twin.enroll(id, "")
				if mine.resp.Serial != theirs.resp.Serial {
					t.Fatalf("serials differ: %s %s", mine.resp.Serial, theirs.resp.Serial)
				}
				*e = *e2
				return theirs.tls, []byte{}
			}},
		{"expired", 403, api.CodeCertificateExpired,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				c := e.enroll(id, "1m")
				e.clock.Advance(2 * time.Minute)
				return c.tls, []byte{}
			}},
		{"expired long ago", 403, api.CodeCertificateExpired,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				c := e.enroll(id, "1m")
				e.clock.Advance(30 * 24 * time.Hour)
				return c.tls, []byte{}
			}},
		{"revoked", 403, api.CodeCertificateRevoked,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				c := e.enroll(id, "")
				if _, err := e.store.Revoke(context.Background(), c.resp.Serial, 1, e.clock.Now()); err != nil {
					t.Fatal(err)
				}
				return c.tls, []byte{}
			}},
		{"CSR reuses the key", 400, api.CodeBadKey,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				c := e.enroll(id, "")
				return c.tls, wire.RenewRequest{CSR: csrFor(t, c.key, nil)}
			}},
		{"bad CSR", 400, api.CodeBadCSR,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				return e.enroll(id, "").tls, wire.RenewRequest{CSR: "nope"}
			}},
		{"ttl above max", 400, api.CodeBadTTL,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				return e.enroll(id, "").tls, wire.RenewRequest{TTL: "2h"}
			}},
		{"bad ttl", 400, api.CodeBadTTL,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				return e.enroll(id, "").tls, wire.RenewRequest{TTL: "soon"}
			}},
		{"unknown field", 400, api.CodeBadRequest,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				return e.enroll(id, "").tls, []byte(`{"spiffe_id":"spiffe://example.org/admin/ops"}`)
			}},
		{"provisioner no longer configured", 403, api.CodeForbidden,
			func(t *testing.T, e *env) (*tls.Certificate, any) {
				c := e.enroll(id, "")
				other := *e.provs["join"]
				other.Name = "other"
				e.srv.SetProvisioners(map[string]*api.Provisioner{"other": &other})
				return c.tls, []byte{}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			cert, body := tt.setup(t, e)
			before := countCerts(t, e)
			r := e.postJSON(e.client(cert), "/v1/renew", body)
			apiError(t, r, tt.status, tt.code)
			if after := countCerts(t, e); after != before {
				t.Errorf("a refused renewal changed the store: %d → %d certificates", before, after)
			}
		})
	}
}

// repeatReader yields the same byte forever, so two authorities draw the
// same serial.
type repeatReader byte

func (r repeatReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r)
	}
	return len(b), nil
}

func TestRenewOverPlainHandlerHasNoTLS(t *testing.T) {
	// The handler alone, without TLS, treats the caller as having no
	// certificate.
	e := newEnv(t, envOptions{})
	req, err := http.NewRequest(http.MethodPost, "/v1/renew", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	e.srv.HTTPSHandler().ServeHTTP(rec, req)
	apiError(t, &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}, 401, api.CodeClientCertRequired)
}

// A certificate whose issuing CA no longer answers (its anchor retired,
// by force while the certificate was valid) cannot renew, even though its
// root may still be published under another anchor.
func TestRenewRefusesRetiredIssuer(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.enroll("spiffe://example.org/agent/retired", "")
	trust, err := api.NewTrust(testTD, []*x509.Certificate{e.h.Root}, 8, 2*time.Minute) // the root, no answering issuer
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetTrust(trust)
	r := e.postJSON(e.client(old.tls), "/v1/renew", []byte{})
	if got := apiError(t, r, http.StatusUnauthorized, api.CodeUnauthorized); !strings.Contains(got.Message, "retired") {
		t.Errorf("message %q, want it to say the issuing CA was retired", got.Message)
	}
}
