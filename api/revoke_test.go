package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/wire"
)

func TestSelfRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	const id = "spiffe://example.org/agent/revoke"
	c := e.enroll(id, "")
	other := e.enroll("spiffe://example.org/agent/bystander", "")

	// A leaf may not revoke another leaf.
	r := e.postJSON(e.client(c.tls), "/v1/revoke", wire.RevokeRequest{Serial: other.resp.Serial})
	apiError(t, r, http.StatusForbidden, api.CodeForbidden)

	r = e.postJSON(e.client(c.tls), "/v1/revoke", wire.RevokeRequest{Reason: "keyCompromise"})
	if r.status != http.StatusOK {
		t.Fatalf("self-revoke: %d %s", r.status, r.body)
	}
	var resp wire.RevokeResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Serial != c.resp.Serial || resp.SPIFFEID != id || resp.Reason != "keyCompromise" || resp.RevokedAt.IsZero() {
		t.Fatalf("RevokeResponse = %+v", resp)
	}
	rec, err := e.store.Certificate(context.Background(), c.resp.Serial)
	if err != nil || !rec.Revoked() {
		t.Fatalf("record after revocation = %+v, %v", rec, err)
	}
	apiError(t, e.postJSON(e.client(c.tls), "/v1/renew", []byte{}), http.StatusForbidden, api.CodeCertificateRevoked)
	if other, err := e.store.Certificate(context.Background(), other.resp.Serial); err != nil || other.Revoked() {
		t.Fatalf("the bystander was revoked: %+v, %v", other, err)
	}
	apiError(t, e.postJSON(e.client(nil), "/v1/revoke", []byte{}), http.StatusUnauthorized, api.CodeClientCertRequired)
}

func TestAdminRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.enroll("spiffe://example.org/agent/admin-revoke", "")
	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"unknown serial", wire.RevokeRequest{Serial: "0badc0de"}, http.StatusNotFound, api.CodeUnknownCertificate},
		{"bad serial", wire.RevokeRequest{Serial: "xyz"}, http.StatusBadRequest, api.CodeBadRequest},
		{"no serial", wire.RevokeRequest{}, http.StatusBadRequest, api.CodeBadRequest},
		{"bad reason", wire.RevokeRequest{Serial: c.resp.Serial, Reason: "bored"}, http.StatusBadRequest, api.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			apiError(t, e.adminPost("/admin/v1/revoke", tt.body), tt.status, tt.code)
		})
	}
	if rec, err := e.store.Certificate(context.Background(), c.resp.Serial); err != nil || rec.Revoked() {
		t.Fatalf("a refused revocation revoked: %+v %v", rec, err)
	}
	r := e.adminPost("/admin/v1/revoke", wire.RevokeRequest{Serial: c.resp.Serial})
	if r.status != http.StatusOK {
		t.Fatalf("admin revoke: %d %s", r.status, r.body)
	}
	apiError(t, e.postJSON(e.client(c.tls), "/v1/renew", []byte{}), http.StatusForbidden, api.CodeCertificateRevoked)
}
