package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
)

func (e *env) adminJSON(method, path string, v any) *response {
	e.t.Helper()
	var body bytes.Buffer
	if v != nil {
		if err := json.NewEncoder(&body).Encode(v); err != nil {
			e.t.Fatal(err)
		}
	}
	return do(e.t, http.DefaultClient, method, e.admin.URL+path, "application/json", &body)
}

func TestWorkloadAdmin(t *testing.T) {
	e := newEnv(t, envOptions{})
	def := workloads.Definition{ID: "web", SPIFFEID: "spiffe://example.org/w/{{unix:uid}}", Selectors: []string{"unix:gid:100"},
		Nodes: []string{"spiffe://example.org/node/*"}, TTL: "10m"}
	if r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", def); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	apiError(t, e.adminJSON(http.MethodPost, "/admin/v1/workloads", def), http.StatusConflict, "conflict")
	for name, bad := range map[string]workloads.Definition{
		"other trust domain": {ID: "x", SPIFFEID: "spiffe://other.org/w", Selectors: []string{"unix:uid:1"}, NodeProvisioners: []string{"join"}},
		"no selector":        {ID: "x", SPIFFEID: "spiffe://example.org/w", NodeProvisioners: []string{"join"}},
		"no node":            {ID: "x", SPIFFEID: "spiffe://example.org/w", Selectors: []string{"unix:uid:1"}},
		"placeholder in td":  {ID: "x", SPIFFEID: "spiffe://{{unix:uid}}/w", Selectors: []string{"unix:uid:1"}, NodeProvisioners: []string{"join"}},
		"bad selector":       {ID: "x", SPIFFEID: "spiffe://example.org/w", Selectors: []string{"uid"}, NodeProvisioners: []string{"join"}},
		"ttl over ceiling":   {ID: "x", SPIFFEID: "spiffe://example.org/w", Selectors: []string{"unix:uid:1"}, NodeProvisioners: []string{"join"}, TTL: "100h"},
	} {
		r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", bad)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d %s, want 400", name, r.status, r.body)
		}
	}
	r := e.adminJSON(http.MethodGet, "/admin/v1/workloads", nil)
	var set workloads.Set
	if err := json.Unmarshal(r.body, &set); err != nil || len(set.Definitions) != 1 || set.Definitions[0].ID != "web" || set.Sequence != 1 {
		t.Fatalf("list: %s (%v)", r.body, err)
	}
	if r := e.adminJSON(http.MethodPost, "/admin/v1/workloads/delete", wire.WorkloadDeleteRequest{ID: "web"}); r.status != http.StatusOK {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	apiError(t, e.adminJSON(http.MethodPost, "/admin/v1/workloads/delete", wire.WorkloadDeleteRequest{ID: "web"}), http.StatusNotFound, api.CodeNotFound)
}

func TestWorkloadSign(t *testing.T) {
	e := newEnv(t, envOptions{})
	def := workloads.Definition{ID: "web", SPIFFEID: "spiffe://example.org/w/{{unix:uid}}", Selectors: []string{"unix:gid:100"},
		Nodes: []string{"spiffe://example.org/node/*"}, TTL: "10m"}
	if r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", def); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	node := e.enroll("spiffe://example.org/node/a", "")
	other := e.enroll("spiffe://example.org/other/b", "")

	// Definitions: the allowed node gets one, the other none.
	for _, tc := range []struct {
		n    *enrolled
		want int
	}{{node, 1}, {other, 0}} {
		r := do(t, e.client(tc.n.tls), http.MethodGet, e.ts.URL+"/v1/workload/definitions", "", nil)
		var set workloads.Set
		if err := json.Unmarshal(r.body, &set); r.status != http.StatusOK || err != nil || len(set.Definitions) != tc.want {
			t.Fatalf("definitions for %s: %d %s", tc.n.resp.SPIFFEID, r.status, r.body)
		}
	}

	key := mustKey(t, ca.ECP256)
	req := func(id string, sel ...string) wire.WorkloadSignRequest {
		return wire.WorkloadSignRequest{SPIFFEID: id, Selectors: sel, CSR: csrFor(t, key, nil)}
	}
	r := e.postJSON(e.client(node.tls), "/v1/workload/sign", req("spiffe://example.org/w/1000", "unix:uid:1000", "unix:gid:100"))
	if r.status != http.StatusCreated {
		t.Fatalf("workload sign: %d %s", r.status, r.body)
	}
	svid := enrolledFrom(t, key, r)
	if svid.leaf.URIs[0].String() != "spiffe://example.org/w/1000" {
		t.Fatalf("SVID for %s", svid.leaf.URIs[0])
	}
	if life := svid.leaf.NotAfter.Sub(svid.leaf.NotBefore); life > 11*time.Minute || life < 10*time.Minute {
		t.Errorf("SVID lifetime %s, want the definition's 10m", life)
	}
	rec, err := e.store.Certificate(context.Background(), svid.resp.Serial)
	if err != nil || rec.Parent != node.resp.Serial {
		t.Fatalf("record parent %q, want the node %s (%v)", rec.Parent, node.resp.Serial, err)
	}
	if !strings.Contains(e.logs.String(), `"parent":"`+node.resp.Serial+`"`) {
		t.Error("the audit line does not name the node")
	}

	// Refusals: what no definition for this node yields.
	for name, tc := range map[string]struct {
		n   *enrolled
		req wire.WorkloadSignRequest
	}{
		"missing selector":     {node, req("spiffe://example.org/w/1000", "unix:uid:1000")},
		"other id":             {node, req("spiffe://example.org/w/1001", "unix:uid:1000", "unix:gid:100")},
		"fixed id":             {node, req("spiffe://example.org/admin", "unix:uid:1000", "unix:gid:100")},
		"value adds a segment": {node, req("spiffe://example.org/w/a/b", "unix:uid:a/b", "unix:gid:100")},
		"two values":           {node, req("spiffe://example.org/w/1000", "unix:uid:1000", "unix:uid:0", "unix:gid:100")},
		"node not allowed":     {other, req("spiffe://example.org/w/1000", "unix:uid:1000", "unix:gid:100")},
	} {
		t.Run(name, func(t *testing.T) {
			apiError(t, e.postJSON(e.client(tc.n.tls), "/v1/workload/sign", tc.req), http.StatusForbidden, api.CodeWorkloadNotAllowed)
		})
	}
	apiError(t, e.postJSON(e.client(nil), "/v1/workload/sign", req("spiffe://example.org/w/1000", "unix:uid:1000", "unix:gid:100")),
		http.StatusUnauthorized, api.CodeClientCertRequired)
	// A workload SVID is neither a node nor renewable by itself.
	apiError(t, e.postJSON(e.client(svid.tls), "/v1/workload/sign", req("spiffe://example.org/w/1000", "unix:uid:1000", "unix:gid:100")),
		http.StatusForbidden, api.CodeForbidden)
	apiError(t, e.postJSON(e.client(svid.tls), "/v1/renew", []byte(`{}`)), http.StatusForbidden, api.CodeForbidden)

	// The node renews its certificate and gets another SVID with the new
	// one. Revoking the node's current certificate revokes the SVIDs of
	// both.
	r = e.postJSON(e.client(node.tls), "/v1/renew", []byte(`{}`))
	if r.status != http.StatusCreated {
		t.Fatalf("node renew: %d %s", r.status, r.body)
	}
	renewed := enrolledFrom(t, node.key, r)
	key2 := mustKey(t, ca.ECP256)
	r = e.postJSON(e.client(renewed.tls), "/v1/workload/sign", wire.WorkloadSignRequest{SPIFFEID: "spiffe://example.org/w/1000",
		Selectors: []string{"unix:uid:1000", "unix:gid:100"}, CSR: csrFor(t, key2, nil)})
	if r.status != http.StatusCreated {
		t.Fatalf("workload sign with the renewed node: %d %s", r.status, r.body)
	}
	svid2 := enrolledFrom(t, key2, r)
	if r := e.adminJSON(http.MethodPost, "/admin/v1/revoke", wire.RevokeRequest{Serial: renewed.resp.Serial}); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	for _, serial := range []string{svid.resp.Serial, svid2.resp.Serial} {
		if rec, err := e.store.Certificate(context.Background(), serial); err != nil || !rec.Revoked() {
			t.Errorf("the node's workload SVID %s is not revoked (%v)", serial, err)
		}
	}
}

// TestWorkloadPolicy: the runtime policy sees endpoint 'workload', the
// node and the workload's selectors, and can deny or cap.
func TestWorkloadPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	def := workloads.Definition{ID: "web", SPIFFEID: "spiffe://example.org/w/{{unix:uid}}", Selectors: []string{"unix:gid:100"},
		NodeProvisioners: []string{"join"}}
	if r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", def); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	e.srv.SetPolicy(mustPolicy(t, policy.Allow,
		policy.Rule{Name: "no-root-workloads", When: "'unix:uid:0' in claims && claims['node'].startsWith('spiffe://example.org/node/')",
			Effect: policy.Deny, Endpoints: []string{"workload"}},
		policy.Rule{Name: "short-workloads", When: "endpoint == 'workload'", Effect: policy.Cap, MaxTTL: "2m", Endpoints: []string{"workload"}}))
	node := e.enroll("spiffe://example.org/node/a", "")
	key := mustKey(t, ca.ECP256)
	sign := func(uid string) *response {
		return e.postJSON(e.client(node.tls), "/v1/workload/sign", wire.WorkloadSignRequest{SPIFFEID: "spiffe://example.org/w/" + uid,
			Selectors: []string{"unix:uid:" + uid, "unix:gid:100"}, CSR: csrFor(t, key, nil)})
	}
	apiError(t, sign("0"), http.StatusForbidden, api.CodePolicyDenied)
	r := sign("1000")
	if r.status != http.StatusCreated {
		t.Fatalf("workload sign: %d %s", r.status, r.body)
	}
	svid := enrolledFrom(t, key, r)
	if life := svid.leaf.NotAfter.Sub(svid.leaf.NotBefore); life > 3*time.Minute+time.Second {
		t.Errorf("SVID lifetime %s, want the policy's 2m cap (plus the backdate)", life)
	}
}

// TestWorkloadAdminOverHTTPS: admins manage definitions over mTLS; other
// certificates are refused.
func TestWorkloadAdminOverHTTPS(t *testing.T) {
	const adminID = "spiffe://example.org/ops/admin"
	e := newEnv(t, envOptions{admins: []string{adminID}})
	admin := e.enroll(adminID, "")
	other := e.enroll("spiffe://example.org/node/a", "")
	def := workloads.Definition{ID: "web", SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1000"}, NodeProvisioners: []string{"join"}}
	apiError(t, e.postJSON(e.client(other.tls), "/admin/v1/workloads", def), http.StatusForbidden, api.CodeForbidden)
	if r := e.postJSON(e.client(admin.tls), "/admin/v1/workloads", def); r.status != http.StatusCreated {
		t.Fatalf("create over HTTPS: %d %s", r.status, r.body)
	}
	r := do(t, e.client(admin.tls), http.MethodGet, e.ts.URL+"/admin/v1/workloads", "", nil)
	var set workloads.Set
	if err := json.Unmarshal(r.body, &set); err != nil || len(set.Definitions) != 1 {
		t.Fatalf("list over HTTPS: %d %s", r.status, r.body)
	}
}
