package policy_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/policy"
)

// FuzzParse feeds arbitrary policy files to Parse and evaluates whatever
// compiles: neither may panic, and a compiled policy always decides.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "example.json")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"rules":[{"name":"a","when":"size(scope) > 2 || ttl > duration('1h')","effect":"cap","max_ttl":"1m"}]}`))
	f.Add([]byte(`{"rules":[{"name":"b","when":"claims.all(k, k.startsWith('x'))","effect":"deny","endpoints":["token"]}]}`))
	f.Add([]byte(`{"rules":[{"name":"c","when":"[1,2,3].map(x, x * 2).size() == 3 && now > timestamp('2020-01-01T00:00:00Z')","effect":"allow"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data, policy.Deny)
		if err != nil {
			return
		}
		for _, e := range policy.Endpoints {
			d := p.Evaluate(&policy.Input{Endpoint: e, Provisioner: "k8s", Claims: map[string]string{"namespace": "x"},
				SPIFFEID: "spiffe://example.org/a", TTL: time.Minute, Scope: []string{"s"}, Now: time.Unix(1e9, 0)})
			if d.Allowed && d.Effect == policy.Deny {
				t.Fatalf("allowed by a deny: %+v", d)
			}
		}
	})
}

// FuzzCompileCondition feeds arbitrary node conditions to
// CompileCondition and evaluates whatever compiles over a node's record:
// neither may panic, and an evaluation error is never a match.
func FuzzCompileCondition(f *testing.F) {
	f.Add(`claims["kubernetes.io.namespace"] == "prod"`)
	f.Add(`"ns" in claims && claims["ns"].startsWith("p") && provisioner == "k8s"`)
	f.Add(`spiffe_id.split("/").size() > 3 || claims.exists(k, k.contains("x"))`)
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := policy.CompileCondition(expr)
		if err != nil {
			return
		}
		ok, err := c.Eval(map[string]string{"ns": "prod"}, "spiffe://example.org/node/a", "k8s")
		if err != nil && ok {
			t.Fatalf("%q: a match with an error: %v", expr, err)
		}
	})
}
