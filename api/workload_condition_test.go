package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
)

// TestWorkloadNodeCondition: a definition's node_condition is evaluated
// over the node certificate's attested claims (a join token attests
// "spiffe_id"): a node whose claims match gets the definition and the
// SVID, one whose claims do not gets neither; a condition over a claim
// no node has allows none (fail closed); a bad condition is refused at
// creation.
func TestWorkloadNodeCondition(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, d := range []workloads.Definition{
		{ID: "a-only", SPIFFEID: "spiffe://example.org/w/a", Selectors: []string{"unix:uid:1000"},
			NodeCondition: `claims["spiffe_id"].endsWith("/node/a") && provisioner == "join"`},
		{ID: "listed-and-a", SPIFFEID: "spiffe://example.org/w/listed", Selectors: []string{"unix:uid:1000"},
			Nodes: []string{"spiffe://example.org/node/*"}, NodeCondition: `spiffe_id == "spiffe://example.org/node/a"`},
		{ID: "no-such-claim", SPIFFEID: "spiffe://example.org/w/k8s", Selectors: []string{"unix:uid:1000"},
			NodeProvisioners: []string{"join"}, NodeCondition: `claims["kubernetes.io.namespace"] == "prod"`},
	} {
		if r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", d); r.status != http.StatusCreated {
			t.Fatalf("create %s: %d %s", d.ID, r.status, r.body)
		}
	}
	for expr, want := range map[string]string{
		`claims["a"] ==`:       "does not compile",
		`claims["a"]`:          "not bool",
		`ttl > duration("1m")`: "undeclared reference",
	} {
		d := workloads.Definition{ID: "bad", SPIFFEID: "spiffe://example.org/w/x", Selectors: []string{"unix:uid:1"}, NodeCondition: expr}
		r := e.adminJSON(http.MethodPost, "/admin/v1/workloads", d)
		apiError(t, r, http.StatusBadRequest, api.CodeBadRequest)
		if !strings.Contains(string(r.body), "node_condition") || !strings.Contains(string(r.body), want) {
			t.Errorf("condition %q refused with %s; want node_condition and %q", expr, r.body, want)
		}
	}

	a := e.enroll("spiffe://example.org/node/a", "")
	b := e.enroll("spiffe://example.org/node/b", "")
	for _, tc := range []struct {
		n    *enrolled
		want []string
	}{{a, []string{"a-only", "listed-and-a"}}, {b, nil}} {
		r := do(t, e.client(tc.n.tls), http.MethodGet, e.ts.URL+"/v1/workload/definitions", "", nil)
		var set workloads.Set
		if err := json.Unmarshal(r.body, &set); r.status != http.StatusOK || err != nil {
			t.Fatalf("definitions: %d %s", r.status, r.body)
		}
		var got []string
		for _, d := range set.Definitions {
			got = append(got, d.ID)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("definitions for %s: %v, want %v", tc.n.resp.SPIFFEID, got, tc.want)
		}
	}

	key := mustKey(t, ca.ECP256)
	sign := func(n *enrolled, id string) *response {
		return e.postJSON(e.client(n.tls), "/v1/workload/sign", wire.WorkloadSignRequest{SPIFFEID: id, Selectors: []string{"unix:uid:1000"},
			CSR: csrFor(t, key, nil)})
	}
	for _, id := range []string{"spiffe://example.org/w/a", "spiffe://example.org/w/listed"} {
		if r := sign(a, id); r.status != http.StatusCreated {
			t.Errorf("node a, %s: %d %s", id, r.status, r.body)
		}
		apiError(t, sign(b, id), http.StatusForbidden, api.CodeWorkloadNotAllowed)
	}
	apiError(t, sign(a, "spiffe://example.org/w/k8s"), http.StatusForbidden, api.CodeWorkloadNotAllowed)
}
