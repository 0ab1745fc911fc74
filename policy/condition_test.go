package policy

import (
	"strings"
	"testing"
)

func TestCondition(t *testing.T) {
	c, err := CompileCondition(`claims["kubernetes.io.namespace"] == "prod" && provisioner == "k8s" && spiffe_id.startsWith("spiffe://example.org/node/")`)
	if err != nil {
		t.Fatal(err)
	}
	prod := map[string]string{"kubernetes.io.namespace": "prod"}
	for _, tc := range []struct {
		claims   map[string]string
		id, prov string
		want     bool
		err      bool
	}{
		{prod, "spiffe://example.org/node/a", "k8s", true, false},
		{map[string]string{"kubernetes.io.namespace": "dev"}, "spiffe://example.org/node/a", "k8s", false, false},
		{prod, "spiffe://example.org/other", "k8s", false, false},
		{prod, "spiffe://example.org/node/a", "join", false, false},
		{nil, "spiffe://example.org/node/a", "k8s", false, true}, // no such claim: an error, not a match
	} {
		got, err := c.Eval(tc.claims, tc.id, tc.prov)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Eval(%v, %s, %s) = %v, %v; want %v (error %v)", tc.claims, tc.id, tc.prov, got, err, tc.want, tc.err)
		}
	}
	for expr, want := range map[string]string{
		"":                        "empty",
		`claims["a"]`:             "not bool",
		`claims["a"] ==`:          "does not compile",
		`ttl > duration("1m")`:    "does not compile", // a rule's variable a record does not hold
		strings.Repeat("a", 5000): "longer than",
		`claims.all(k, claims.all(j, claims.all(i, claims[k] + claims[j] + claims[i] != "")))`: "cost",
	} {
		if _, err := CompileCondition(expr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CompileCondition(%.40q) = %v; want an error with %q", expr, err, want)
		}
	}
}
