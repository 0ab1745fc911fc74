package test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// withPolicy writes rules as the CA's policy file and names it in
// agentca.json.
func withPolicy(c *testCA, rules string) string {
	c.t.Helper()
	path := filepath.Join(c.Dir, "policy.json")
	writeFile(c.t, path, []byte(rules))
	c.editConfig(func(cfg map[string]any) {
		cfg["policy"] = map[string]any{"file": "policy.json", "environment": map[string]string{"stage": "e2e"}}
	})
	return path
}

func TestPolicyRuleThatDoesNotCompileRefusesToStart(t *testing.T) {
	c := newTokenCA(t)
	withPolicy(c, `{"rules": [
		{"name": "fine", "when": "true", "effect": "allow", "endpoints": ["renew"]},
		{"name": "typo-in-namespace", "when": "claims['namespace'] == ", "effect": "deny"}]}`)
	r := runCLI(t, "serve", "--dir", c.Dir)
	if r.code != 1 || !strings.Contains(r.stderr, `"typo-in-namespace"`) {
		t.Fatalf("serve with a broken rule must exit 1 naming it:\n%s", r)
	}
	oneLine(t, r)
}

func TestPolicyKubernetesNamespaceAndCap(t *testing.T) {
	c := newTokenCA(t)
	cluster := provNewCluster(t)
	provAddProvisioners(c, cluster.entry("k8s", nil))
	withPolicy(c, `{"rules": [
		{"name": "no-sandbox", "endpoints": ["sign", "renew"],
		 "when": "provisioner == 'k8s' && claims['namespace'] == 'sandbox'", "effect": "deny"},
		{"name": "k8s-short", "endpoints": ["sign"], "when": "provisioner == 'k8s'", "effect": "cap", "max_ttl": "2m"}]}`)
	c.start()
	ok := provSign(t, c, "k8s", cluster.token(t, provNewPod("agents", "runner")))
	_, leaf := wantIssued(t, ok)
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != 3*time.Minute {
		t.Errorf("lifetime %s, want the 2m cap plus the 1m backdate", life)
	}
	denied := provSign(t, c, "k8s", cluster.token(t, provNewPod("sandbox", "runner")))
	e := wantError(t, denied, http.StatusForbidden, "policy_denied")
	if !strings.Contains(e.Message, "no-sandbox") {
		t.Errorf("message %q does not name the rule", e.Message)
	}
	eventually(t, 5*time.Second, 50*time.Millisecond, "the decision's audit line", func() bool {
		return provLogLine(c.proc.log(), "op=policy", "rule=no-sandbox", "outcome=denied") &&
			provLogLine(c.proc.log(), "op=policy", "rule=k8s-short", "outcome=allowed", "max_ttl=2m0s")
	})

	// The same decisions offline, from the state directory's policy.
	req := filepath.Join(t.TempDir(), "req.json")
	writeFile(t, req, []byte(`{"endpoint": "sign", "provisioner": "k8s", "claims": {"namespace": "sandbox"}, "ttl": "5m"}`))
	r := runCLI(t, "policy", "test", "--dir", c.Dir, "--request", req)
	if r.code != 1 || !strings.Contains(r.stdout, `deny (rule "no-sandbox")`) {
		t.Errorf("policy test (sandbox):\n%s", r)
	}
	writeFile(t, req, []byte(`{"endpoint": "sign", "provisioner": "k8s", "claims": {"namespace": "agents"}, "ttl": "5m"}`))
	r = runCLI(t, "policy", "test", "--dir", c.Dir, "--request", req, "--json")
	var d struct {
		Allowed bool   `json:"allowed"`
		Rule    string `json:"rule"`
		MaxTTL  string `json:"max_ttl"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); r.code != 0 || err != nil || !d.Allowed || d.Rule != "k8s-short" || d.MaxTTL != "2m0s" {
		t.Errorf("policy test (agents): %+v %v\n%s", d, err, r)
	}
}

// TestPolicySIGHUP swaps the policy under load: no request fails while
// it changes, a rule that does not compile keeps the running policy.
func TestPolicySIGHUP(t *testing.T) {
	c := newTokenCA(t)
	path := withPolicy(c, `{"rules": [{"name": "stage-only", "when": "environment['stage'] != 'e2e'", "effect": "deny"}]}`)
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	a := readCreds(t, dir)
	hc := c.client(a.tlsCert())
	defer hc.CloseIdleConnections()
	form := func(scope string) string {
		return "grant_type=client_credentials&resource=https://tools.example.org&scope=" + scope
	}
	token := func(scope string) (apiResp, error) {
		return tryDo(hc, http.MethodPost, c.URL+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form(scope)))
	}
	if r, err := token("tools.write"); err != nil || r.status != 200 {
		t.Fatalf("before the reload: %v %d %s", err, r.status, r.body)
	}
	// Readers run throughout; every answer must be a 200.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var served atomic.Int64
	errs := make(chan string, 16)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := token("tools.read")
				if err != nil || r.status != 200 {
					select {
					case errs <- strings.TrimSpace(string(r.body)) + " " + errString(err):
					default:
					}
					return
				}
				served.Add(1)
			}
		}()
	}
	writeFile(t, path, []byte(`{"rules": [{"name": "read-only", "endpoints": ["token"], "when": "'tools.write' in scope", "effect": "deny"}]}`))
	c.proc.signal(t, syscall.SIGHUP)
	eventually(t, 10*time.Second, 50*time.Millisecond, "the new policy to refuse tools.write", func() bool {
		r, err := token("tools.write")
		return err == nil && r.status == http.StatusForbidden && strings.Contains(string(r.body), "access_denied")
	})
	// A policy that does not compile keeps the running one.
	writeFile(t, path, []byte(`{"rules": [{"name": "half-written", "when": "scope.exists(s, ", "effect": "deny"}]}`))
	c.proc.signal(t, syscall.SIGHUP)
	eventually(t, 10*time.Second, 50*time.Millisecond, "the failed reload to be logged", func() bool {
		return provLogLine(c.proc.log(), "policy reload failed", "half-written")
	})
	if r, err := token("tools.write"); err != nil || r.status != http.StatusForbidden {
		t.Errorf("after a failed reload: %v %d %s, want the previous policy's 403", err, r.status, r.body)
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("a request failed during the reloads: %s", e)
	}
	if served.Load() == 0 {
		t.Error("no request was served during the reloads")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
