package ca_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
)

// rules is a runtime policy of compiled rules that records what it saw
// (api.Policy is the daemon's).
type rules struct {
	p    *policy.Policy
	seen []policy.Input
}

func (r *rules) Decide(in *policy.Input) (policy.Decision, bool) {
	r.seen = append(r.seen, *in)
	return r.p.Evaluate(in), true
}

func compile(t *testing.T, def policy.Effect, rs ...policy.Rule) *rules {
	t.Helper()
	p, err := policy.Compile(policy.File{Rules: rs}, def)
	if err != nil {
		t.Fatal(err)
	}
	return &rules{p: p}
}

// TestIssueDecided: the runtime policy decides before anything is signed;
// it sees the lifetime the request would get, its endpoint, claims (the
// PolicyClaims when set) and environment; its cap clamps the lifetime
// computed once in the Authority; a refusal signs and records nothing.
func TestIssueDecided(t *testing.T) {
	pol := compile(t, policy.Allow,
		policy.Rule{Name: "no-sandbox", When: "claims['namespace'] == 'sandbox'", Effect: policy.Deny, Endpoints: []string{"sign"}},
		policy.Rule{Name: "short-eu", When: "environment['region'] == 'eu'", Effect: policy.Cap, MaxTTL: "10m", Endpoints: []string{"sign"}})
	a, st, clk := testAuthority(t, func(o *ca.Options) { o.Decider = pol })
	req := func(claims map[string]string, ttl time.Duration) *ca.Request {
		return &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(), SPIFFEID: "spiffe://example.org/agent", Provisioner: "k8s",
			TTL: ttl, DefaultTTL: 30 * time.Minute, MaxTTL: time.Hour, Endpoint: "sign", Claims: claims,
			Environment: map[string]string{"region": "eu"}}
	}

	got, d, err := a.IssueDecided(context.Background(), req(map[string]string{"namespace": "prod"}, 0))
	if err != nil || d == nil || !d.Allowed || d.Rule != "short-eu" {
		t.Fatalf("IssueDecided(prod) = %v, %+v, %v; want allowed by short-eu", got != nil, d, err)
	}
	if life := got.NotAfter.Sub(clk.Now().Truncate(time.Second)); life != 10*time.Minute {
		t.Fatalf("lifetime %s, want the 10m cap", life)
	}
	if in := pol.seen[0]; in.TTL != 30*time.Minute || in.Endpoint != "sign" || in.Claims["namespace"] != "prod" || !in.Now.Equal(clk.Now()) {
		t.Fatalf("the policy saw %+v; want ttl 30m (the default), endpoint sign, the claims and the time", in)
	}
	// A requested lifetime above the cap is clamped, not refused.
	if got, _, err := a.IssueDecided(context.Background(), req(map[string]string{"namespace": "prod"}, 50*time.Minute)); err != nil ||
		got.NotAfter.Sub(clk.Now().Truncate(time.Second)) != 10*time.Minute {
		t.Fatalf("IssueDecided(50m) = %v, %v; want the 10m cap", got, err)
	}

	before := countCerts(t, st)
	got, d, err = a.IssueDecided(context.Background(), req(map[string]string{"namespace": "sandbox"}, 0))
	if got != nil || !errors.Is(err, ca.ErrDenied) || d == nil || d.Allowed || d.Rule != "no-sandbox" {
		t.Fatalf("IssueDecided(sandbox) = %v, %+v, %v; want ErrDenied by no-sandbox", got != nil, d, err)
	}
	if n := countCerts(t, st); n != before {
		t.Fatalf("a refused request recorded a certificate (%d, was %d)", n, before)
	}

	// PolicyClaims are what the policy sees, and are not recorded.
	r := req(map[string]string{"namespace": "prod"}, 0)
	r.PolicyClaims = map[string]string{"namespace": "sandbox"}
	if _, _, err := a.IssueDecided(context.Background(), r); !errors.Is(err, ca.ErrDenied) {
		t.Fatalf("IssueDecided(policy claims sandbox) = %v; want ErrDenied", err)
	}
	r = req(nil, 0)
	r.PolicyClaims = map[string]string{"namespace": "prod"}
	got, _, err = a.IssueDecided(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := st.Certificate(context.Background(), got.Serial); err != nil || rec.Claims != nil {
		t.Fatalf("record claims %v (err %v); want none recorded", rec.Claims, err)
	}
}

// TestDeciderInForce: the CA's own certificates are not the policy's;
// without a policy (or after SetDecider(nil)) there is no decision and
// everything is allowed; Decide fills in the time.
func TestDeciderInForce(t *testing.T) {
	pol := compile(t, policy.Deny)
	a, _, clk := testAuthority(t, func(o *ca.Options) { o.Decider = pol })
	key := mustKey(t, ca.ECP256).Public()
	if _, d, err := a.IssueDecided(context.Background(), &ca.Request{PublicKey: key, SPIFFEID: "spiffe://example.org/agentca/server",
		Provisioner: "agentca-server", CAIdentity: true}); err != nil || d != nil {
		t.Fatalf("the CA's own certificate: decision %+v, err %v; want none, issued", d, err)
	}
	if _, err := a.Issue(context.Background(), &ca.Request{PublicKey: key, SPIFFEID: "spiffe://example.org/agent", Provisioner: "join"}); !errors.Is(err, ca.ErrDenied) {
		t.Fatalf("Issue under a default-deny policy = %v; want ErrDenied", err)
	}
	in := &policy.Input{Endpoint: "token"}
	if d, inForce := a.Decide(in); !inForce || d.Allowed || !in.Now.Equal(clk.Now()) {
		t.Fatalf("Decide = %+v, %v (now %s); want a denial in force at the CA's time", d, inForce, in.Now)
	}

	a.SetDecider(nil)
	if d, inForce := a.Decide(&policy.Input{Endpoint: "token"}); inForce || !d.Allowed {
		t.Fatalf("Decide without a policy = %+v, %v; want allowed, not in force", d, inForce)
	}
	if _, d, err := a.IssueDecided(context.Background(), &ca.Request{PublicKey: key, SPIFFEID: "spiffe://example.org/agent", Provisioner: "join"}); err != nil || d != nil {
		t.Fatalf("IssueDecided without a policy: decision %+v, err %v; want none, issued", d, err)
	}
}
