package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
)

// TestNoSecretEchoed sends a live join token in every request field of
// every endpoint that takes JSON, and checks that neither a response body
// nor a log line contains it (nor its second half).
func TestNoSecretEchoed(t *testing.T) {
	e := newEnv(t, envOptions{})
	secret := e.token("spiffe://example.org/agent/secret")
	key := mustKey(t, ca.ECP256)
	csr := csrFor(t, key, nil)
	good := e.enroll("spiffe://example.org/agent/holder", "")
	type call struct {
		name string
		send func() *response
	}
	https := func(path string, c *http.Client, v any) func() *response {
		return func() *response { return e.postJSON(c, path, v) }
	}
	admin := func(path string, v any) func() *response { return func() *response { return e.adminPost(path, v) } }
	anon, mtls := e.client(nil), e.client(good.tls)
	calls := []call{
		{"sign provisioner", https("/v1/sign", anon, wire.SignRequest{Provisioner: secret, Token: "x", CSR: csr})},
		{"sign ttl", https("/v1/sign", anon, wire.SignRequest{Provisioner: "join", Token: "agentca-jt-x", CSR: csr, TTL: secret})},
		{"sign task", https("/v1/sign", anon, wire.SignRequest{Provisioner: "join", Token: "agentca-jt-x", CSR: csr, Task: secret + "!"})},
		{"sign csr", https("/v1/sign", anon, wire.SignRequest{Provisioner: "join", Token: "agentca-jt-x", CSR: secret})},
		{"challenge provisioner", https("/v1/challenge", anon, wire.ChallengeRequest{Provisioner: secret})},
		{"renew ttl", https("/v1/renew", mtls, wire.RenewRequest{TTL: secret})},
		{"renew csr", https("/v1/renew", mtls, wire.RenewRequest{CSR: secret})},
		{"self revoke serial", https("/v1/revoke", mtls, wire.RevokeRequest{Serial: secret})},
		{"self revoke reason", https("/v1/revoke", mtls, wire.RevokeRequest{Reason: secret})},
		{"unknown field", https("/v1/sign", anon, map[string]string{secret: "x"})},
		{"tokens provisioner", admin("/admin/v1/tokens", wire.TokenRequest{SPIFFEID: "spiffe://example.org/a", Provisioner: secret})},
		{"tokens spiffe_id", admin("/admin/v1/tokens", wire.TokenRequest{SPIFFEID: secret})},
		{"tokens ttl", admin("/admin/v1/tokens", wire.TokenRequest{SPIFFEID: "spiffe://example.org/a", TTL: secret})},
		{"admin revoke serial", admin("/admin/v1/revoke", wire.RevokeRequest{Serial: secret})},
		{"admin revoke reason", admin("/admin/v1/revoke", wire.RevokeRequest{Serial: good.resp.Serial, Reason: secret})},
	}
	for _, c := range calls {
		r := c.send()
		if r.status < 400 {
			t.Errorf("%s: status %d, want a refusal", c.name, r.status)
		}
		if bytes.Contains(r.body, []byte(secret[len(secret)/2:])) {
			t.Errorf("%s: the response echoes the token: %s", c.name, r.body)
		}
	}
	if logs := e.logs.String(); strings.Contains(logs, secret[len(secret)/2:]) {
		t.Fatalf("a log line holds the token:\n%s", logs)
	}
	// The unknown provisioner is still named, by length and hash.
	r := e.postJSON(anon, "/v1/sign", wire.SignRequest{Provisioner: secret, Token: "x", CSR: csr})
	if m := apiError(t, r, http.StatusBadRequest, api.CodeUnknownProvisioner).Message; !strings.Contains(m, "54 bytes, sha256 ") {
		t.Fatalf("message %q", m)
	}
}
