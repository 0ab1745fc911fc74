package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/policy"
)

// example is testdata/example.json, the policy docs/policy.md shows.
func example(t testing.TB) *policy.Policy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "example.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(b, policy.Allow)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// at is a fixed instant on a weekday, inside office hours (UTC).
var at = time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC)

func k8sInput(ns string) *policy.Input {
	return &policy.Input{Endpoint: policy.EndpointSign, Provisioner: "k8s",
		Claims:   map[string]string{"namespace": ns, "service_account": "runner", "pod_name": "runner-0"},
		SPIFFEID: "spiffe://example.org/ns/" + ns + "/sa/runner", TTL: 10 * time.Minute, Now: at}
}

func TestEvaluate(t *testing.T) {
	p := example(t)
	tests := []struct {
		name    string
		in      *policy.Input
		allowed bool
		rule    string
		maxTTL  time.Duration
	}{
		{"namespace denied", k8sInput("sandbox"), false, "no-sandbox", 0},
		{"namespace allowed", k8sInput("agents"), true, "", 0},
		{"night is denied for tokens", &policy.Input{Endpoint: policy.EndpointToken, SPIFFEID: "spiffe://example.org/agent/a",
			Scope: []string{"tools.read"}, Now: time.Date(2026, 3, 4, 23, 0, 0, 0, time.UTC)}, false, "office-hours-tokens", 0},
		{"night does not apply to sign", &policy.Input{Endpoint: policy.EndpointSign, Provisioner: "join",
			SPIFFEID: "spiffe://example.org/agent/a", Now: time.Date(2026, 3, 4, 23, 0, 0, 0, time.UTC)}, true, "", 0},
		{"admin scope only for ops", &policy.Input{Endpoint: policy.EndpointToken, SPIFFEID: "spiffe://example.org/agent/a",
			Scope: []string{"tools.read", "tools.admin"}, Now: at}, false, "admin-scope-ops-only", 0},
		{"admin scope for ops", &policy.Input{Endpoint: policy.EndpointToken, SPIFFEID: "spiffe://example.org/ops/x",
			Scope: []string{"tools.admin"}, Now: at}, true, "", 0},
		{"tasks are capped", &policy.Input{Endpoint: policy.EndpointSign, Provisioner: "join", SPIFFEID: "spiffe://example.org/agent/a",
			Task: "t-1", TTL: time.Hour, Now: at}, true, "task-lifetime", 2 * time.Minute},
		{"environment", &policy.Input{Endpoint: policy.EndpointRenew, SPIFFEID: "spiffe://example.org/agent/a",
			Environment: map[string]string{"maintenance": "true"}, Now: at}, false, "maintenance", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Evaluate(tc.in)
			if d.Allowed != tc.allowed || d.Rule != tc.rule || d.MaxTTL != tc.maxTTL || d.Err != nil {
				t.Fatalf("decision %+v, want allowed=%v rule=%q max_ttl=%s", d, tc.allowed, tc.rule, tc.maxTTL)
			}
		})
	}
}

func TestDefaultDeny(t *testing.T) {
	p, err := policy.Parse([]byte(`{"rules":[{"name":"join","when":"provisioner == 'join'","effect":"allow"}]}`), policy.Deny)
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Evaluate(&policy.Input{Endpoint: "sign", Provisioner: "k8s"}); d.Allowed || d.RuleName() != "default" {
		t.Fatalf("got %+v, want the default deny", d)
	}
	if d := p.Evaluate(&policy.Input{Endpoint: "sign", Provisioner: "join"}); !d.Allowed || d.Rule != "join" {
		t.Fatalf("got %+v, want allow by join", d)
	}
}

func TestEvaluationErrorDenies(t *testing.T) {
	p, err := policy.Parse([]byte(`{"rules":[{"name":"ns","when":"claims['namespace'] == 'x'","effect":"deny"}]}`), policy.Allow)
	if err != nil {
		t.Fatal(err)
	}
	d := p.Evaluate(&policy.Input{Endpoint: "sign"})
	if d.Allowed || d.Rule != "ns" || d.Err == nil {
		t.Fatalf("a missing key must deny with the rule named and an error; got %+v", d)
	}
}

func TestCompileErrorsNameTheRule(t *testing.T) {
	tests := []struct{ name, file, want string }{
		{"syntax", `{"rules":[{"name":"ok","when":"true","effect":"allow"},{"name":"broken","when":"provisioner ==","effect":"deny"}]}`, `rule "broken" (#2)`},
		{"type", `{"rules":[{"name":"not-bool","when":"provisioner","effect":"deny"}]}`, `not bool`},
		{"unknown variable", `{"rules":[{"name":"typo","when":"provisoner == 'x'","effect":"deny"}]}`, `rule "typo"`},
		{"type mismatch", `{"rules":[{"name":"ttl","when":"ttl > 5","effect":"deny"}]}`, `rule "ttl"`},
		{"cap without max_ttl", `{"rules":[{"name":"c","when":"true","effect":"cap"}]}`, `max_ttl`},
		{"max_ttl on allow", `{"rules":[{"name":"c","when":"true","effect":"allow","max_ttl":"1m"}]}`, `cap only`},
		{"bad effect", `{"rules":[{"name":"c","when":"true","effect":"permit"}]}`, `effect`},
		{"bad endpoint", `{"rules":[{"name":"c","when":"true","effect":"deny","endpoints":["issue"]}]}`, `endpoint`},
		{"duplicate", `{"rules":[{"name":"c","when":"true","effect":"deny"},{"name":"c","when":"false","effect":"deny"}]}`, `earlier`},
		{"empty when", `{"rules":[{"name":"c","when":" ","effect":"deny"}]}`, `required`},
		{"bad name", `{"rules":[{"name":"a b","when":"true","effect":"deny"}]}`, `name`},
		{"unknown field", `{"rules":[{"name":"c","when":"true","effect":"deny","why":"x"}]}`, `unknown field`},
		{"trailing", `{"rules":[]} {}`, `trailing`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tc.file), policy.Allow)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	_, err := policy.Parse([]byte(`{"rules":[{"name":"broken","when":"(","effect":"deny"}]}`), policy.Allow)
	var re *policy.RuleError
	if !errors.As(err, &re) || re.Name != "broken" || re.Index != 0 {
		t.Fatalf("want a *RuleError naming broken, got %v", err)
	}
	if _, err := policy.Parse([]byte(`{"rules":[]}`), "maybe"); err == nil {
		t.Fatal("a default other than allow or deny must be refused")
	}
}

// BenchmarkEvaluate is one decision through the example policy that
// walks every rule (the last one matches nothing): the budget is
// 20 µs per decision.
func BenchmarkEvaluate(b *testing.B) {
	p := example(b)
	in := &policy.Input{Endpoint: policy.EndpointToken, Provisioner: "k8s",
		Claims:   map[string]string{"namespace": "agents", "service_account": "runner"},
		SPIFFEID: "spiffe://example.org/ns/agents/sa/runner", TTL: 5 * time.Minute,
		Scope: []string{"tools.read"}, Audience: []string{"https://tools.example.org"}, Now: at}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Evaluate(in); !d.Allowed || d.Rule != "" {
			b.Fatalf("%+v", d)
		}
	}
}

// TestExpensiveRuleRefused: a rule whose estimated worst-case cost is
// beyond the bound is refused at load time; the documented rules and
// ordinary guards pass.
func TestExpensiveRuleRefused(t *testing.T) {
	expensive := []string{
		// every DNS name against every other, by regular expression
		`dns_names.exists(a, dns_names.exists(b, a != b && a.matches(b)))`,
		`claims.all(k, claims.all(j, claims[k].contains(claims[j])))`,
	}
	for _, when := range expensive {
		_, err := policy.Compile(policy.File{Rules: []policy.Rule{{Name: "slow", When: when, Effect: policy.Deny}}}, policy.Allow)
		if err == nil || !strings.Contains(err.Error(), "estimated worst-case cost") || !strings.Contains(err.Error(), `"slow"`) {
			t.Errorf("%s: err = %v, want a cost refusal naming the rule", when, err)
		}
	}
	cheap := []string{
		`provisioner == 'k8s' && claims['namespace'] == 'sandbox'`,
		`now.getHours('Europe/Paris') < 7 || now.getHours('Europe/Paris') >= 20`,
		`'tools.admin' in scope && !spiffe_id.startsWith('spiffe://example.org/ops/')`,
		`claims.?namespace.orValue('') == 'sandbox'`,
		`dns_names.all(d, d.endsWith('.example.org'))`,
		`spiffe_id.matches('^spiffe://example.org/(agent|tool)/[a-z0-9-]+$')`,
		`scope.all(s, s.startsWith('tools.'))`,
	}
	for _, when := range cheap {
		if _, err := policy.Compile(policy.File{Rules: []policy.Rule{{Name: "ok", When: when, Effect: policy.Deny}}}, policy.Allow); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
	example(t) // the documented policy compiles
}
