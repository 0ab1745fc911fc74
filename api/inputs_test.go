package api_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
)

// longID is a valid SPIFFE ID of exactly n bytes in testTD.
func longID(n int) string {
	p := "spiffe://" + testTD + "/"
	return p + strings.Repeat("a", n-len(p))
}

// TestSPIFFEIDInputs: IDs over the SPIFFE limit of 2,048 bytes and IDs
// under the CA's reserved path /agentca are refused by token create,
// sign and renew, with a clear error.
func TestSPIFFEIDInputs(t *testing.T) {
	e := newEnv(t, envOptions{})
	tokenCases := []struct {
		name, id string
		status   int
		msg      string
	}{
		{"2048 bytes", longID(2048), http.StatusCreated, ""},
		{"2049 bytes", longID(2049), http.StatusBadRequest, "longer than the SPIFFE limit of 2048"},
		{"60 KB", longID(60 << 10), http.StatusBadRequest, "longer than the SPIFFE limit of 2048"},
		{"the CA server", "spiffe://example.org/agentca/server", http.StatusBadRequest, "reserved for the CA's own identities"},
		{"the reserved path itself", "spiffe://example.org/agentca", http.StatusBadRequest, "reserved"},
		{"under it", "spiffe://example.org/agentca/ocsp/x", http.StatusBadRequest, "reserved"},
		{"another case", "spiffe://example.org/AgentCA/server", http.StatusBadRequest, "reserved"},
		{"a sibling name", "spiffe://example.org/agentcafoo", http.StatusCreated, ""},
	}
	for _, tt := range tokenCases {
		t.Run("token create/"+tt.name, func(t *testing.T) {
			r := e.adminPost("/admin/v1/tokens", wire.TokenRequest{SPIFFEID: tt.id})
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, tt.status, r.body)
			}
			if tt.msg != "" {
				if m := apiError(t, r, tt.status, api.CodeBadRequest).Message; !strings.Contains(m, tt.msg) {
					t.Fatalf("message %q, want %q", m, tt.msg)
				}
				if len(r.body) > 4096 {
					t.Fatalf("the error body is %d bytes: it echoes the ID", len(r.body))
				}
			}
		})
	}
	// A token minted before the check (straight in the store): sign
	// refuses the ID it is bound to.
	for _, id := range []string{longID(2049), "spiffe://example.org/agentca/server", "spiffe://example.org/agentca/x"} {
		t.Run("sign/"+id[:min(len(id), 40)], func(t *testing.T) {
			key := mustKey(t, ca.ECP256)
			r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(id), CSR: csrFor(t, key, nil)})
			apiError(t, r, http.StatusForbidden, api.CodeIdentityNotAllowed)
		})
	}
	t.Run("renew of a reserved ID", func(t *testing.T) {
		// A certificate under the reserved path issued before the check:
		// it does not renew.
		key := mustKey(t, ca.ECP256)
		got, err := e.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(),
			SPIFFEID: "spiffe://example.org/agentca/server", Provisioner: "join", TTL: time.Hour, MaxTTL: time.Hour, CAIdentity: true})
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: [][]byte{got.DER}, PrivateKey: key}
		r := e.postJSON(e.client(cert), "/v1/renew", []byte{})
		if m := apiError(t, r, http.StatusForbidden, api.CodeIdentityNotAllowed).Message; !strings.Contains(m, "reserved") {
			t.Fatalf("message %q", m)
		}
	})
	t.Run("renew of a 2048-byte ID", func(t *testing.T) {
		old := e.enroll(longID(2048), "")
		r := e.postJSON(e.client(old.tls), "/v1/renew", []byte{})
		if r.status != http.StatusCreated {
			t.Fatalf("renew: %d %s", r.status, r.body)
		}
	})
}

// TestTokenRefusesDisallowedID: a certificate issued before the checks
// with an ID the CA no longer issues (under /agentca) gets no access token.
func TestTokenRefusesDisallowedID(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, nil, nil)
	key := mustKey(t, ca.ECP256)
	got, err := e.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(),
		SPIFFEID: "spiffe://example.org/agentca/agent", Provisioner: "join", TTL: time.Hour, MaxTTL: time.Hour, CAIdentity: true})
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{got.DER}, PrivateKey: key}
	r, body := e.postForm(e.client(cert), tokenForm(testScope, toolsURL))
	oauthError(t, r, body, http.StatusUnauthorized, "invalid_client")
	if d, _ := body["error_description"].(string); !strings.Contains(d, "no longer allowed") {
		t.Fatalf("error_description %q", d)
	}
	// A regular agent still gets one.
	ok := e.enroll(agentA, "")
	if r, body := e.postForm(e.client(ok.tls), tokenForm(testScope, toolsURL)); r.status != http.StatusOK {
		t.Fatalf("a regular agent: %d %v", r.status, body)
	}
}
