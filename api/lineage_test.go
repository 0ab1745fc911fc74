package api_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// revokedSeen records what the revocation service told the caches.
type revokedSeen struct {
	mu      sync.Mutex
	serials map[string]int
}

func (r *revokedSeen) has(serial string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serials[serial] > 0
}

// withCaches replaces e's server with one whose revocation service
// tells a cache that records every revocation (as the daemon's OCSP and
// CRL caches are told), and fails the test on one told twice.
func withCaches(t *testing.T, e *env) *revokedSeen {
	t.Helper()
	seen := &revokedSeen{serials: map[string]int{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, nil))
	rev, err := revocation.New(revocation.Options{Store: e.store, Workloads: e.store, Logger: logger,
		Notifier: revocation.Direct(revocation.CacheFunc(func(_ context.Context, rec *store.Certificate) {
			if !rec.Revoked() {
				t.Errorf("the caches were told of an unrevoked record %s", rec.Serial)
			}
			seen.mu.Lock()
			seen.serials[rec.Serial]++
			if seen.serials[rec.Serial] > 1 {
				t.Errorf("the caches were told of %s %d times", rec.Serial, seen.serials[rec.Serial])
			}
			seen.mu.Unlock()
		}))})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Authority: e.authority, Store: e.store, Trust: e.srv.Trust(), Provisioners: e.provs,
		Logger: logger, Registry: prometheus.NewRegistry(), Now: e.clock.Now, Revocation: rev})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.ts = httptest.NewUnstartedServer(srv.HTTPSHandler())
	e.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	e.ts.StartTLS()
	t.Cleanup(e.ts.Close)
	e.plain = httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(e.plain.Close)
	e.admin = httptest.NewServer(srv.AdminHandler())
	t.Cleanup(e.admin.Close)
	return seen
}

func (e *env) renewWith(c *enrolled, key crypto.Signer) *response {
	e.t.Helper()
	return e.postJSON(e.client(c.tls), "/v1/renew", wire.RenewRequest{CSR: csrFor(e.t, key, nil)})
}

func mustRevoked(t *testing.T, e *env, serial string, reason int) {
	t.Helper()
	rec, err := e.store.Certificate(context.Background(), serial)
	if err != nil || !rec.Revoked() || rec.RevocationReason != reason {
		t.Fatalf("%s: record %+v, %v; want revoked with reason %d", serial, rec, err, reason)
	}
}

// TestRenewRetryAndReuse: a renewal retried with the same key gets the
// same child (200); a second renewal onto another key is refused
// (renewal_reused) and revokes the lineage, which reaches the caches, an
// audit line and the metric.
func TestRenewRetryAndReuse(t *testing.T) {
	e := newEnv(t, envOptions{})
	seen := withCaches(t, e)
	const id = "spiffe://example.org/agent/lineage"
	grand := e.enroll(id, "")
	k1 := mustKey(t, ca.ECP256)
	r := e.renewWith(grand, k1)
	if r.status != http.StatusCreated {
		t.Fatalf("renew: %d %s", r.status, r.body)
	}
	parent := enrolledFrom(t, k1, r)
	k2 := mustKey(t, ca.ECP256)
	r = e.renewWith(parent, k2)
	if r.status != http.StatusCreated {
		t.Fatalf("renew: %d %s", r.status, r.body)
	}
	child := enrolledFrom(t, k2, r)

	// The answer was lost: the agent retries with the same key.
	again := e.renewWith(parent, k2)
	if again.status != http.StatusOK {
		t.Fatalf("retried renewal: %d %s, want 200", again.status, again.body)
	}
	if got := enrolledFrom(t, k2, again); got.resp.Serial != child.resp.Serial || !got.leaf.Equal(child.leaf) {
		t.Fatalf("retried renewal got %s, want the child %s", got.resp.Serial, child.resp.Serial)
	}
	if n := countCerts(t, e); n != 3 {
		t.Fatalf("%d certificates recorded, want 3 (the retry records nothing)", n)
	}

	// A copy of parent's files renews onto another key.
	thief := e.renewWith(parent, mustKey(t, ca.ECP256))
	apiError(t, thief, http.StatusForbidden, api.CodeRenewalReused)
	for _, c := range []*enrolled{grand, parent, child} {
		mustRevoked(t, e, c.resp.Serial, 1)
		if !seen.has(c.resp.Serial) {
			t.Errorf("the caches were not told of %s", c.resp.Serial)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"audit":"renewal_reused"`) || !strings.Contains(logs, `"serial":"`+parent.resp.Serial+`"`) {
		t.Errorf("no renewal_reused audit line naming the parent:\n%s", logs)
	}
	m := do(t, http.DefaultClient, http.MethodGet, e.plain.URL+"/metrics", "", nil)
	if !strings.Contains(string(m.body), "agentca_renewal_reused_total 1") {
		t.Errorf("metrics lack agentca_renewal_reused_total 1")
	}
	// Neither branch renews any more.
	apiError(t, e.renewWith(child, mustKey(t, ca.ECP256)), http.StatusForbidden, api.CodeCertificateRevoked)
	apiError(t, e.renewWith(parent, k2), http.StatusForbidden, api.CodeCertificateRevoked)
}

// TestRevokeCascadesThroughEveryPath: admin, self and task-end revocations
// revoke the certificates renewed from the one revoked, and the caches
// hear of each.
func TestRevokeCascadesThroughEveryPath(t *testing.T) {
	e := newEnv(t, envOptions{})
	seen := withCaches(t, e)
	chain := func(id, task string) []*enrolled {
		key := mustKey(t, ca.ECP256)
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(id), CSR: csrFor(t, key, nil), Task: task})
		if r.status != http.StatusCreated {
			t.Fatalf("sign: %d %s", r.status, r.body)
		}
		out := []*enrolled{enrolledFrom(t, key, r)}
		for range 2 {
			k := mustKey(t, ca.ECP256)
			r := e.renewWith(out[len(out)-1], k)
			if r.status != http.StatusCreated {
				t.Fatalf("renew: %d %s", r.status, r.body)
			}
			out = append(out, enrolledFrom(t, k, r))
		}
		return out
	}
	check := func(t *testing.T, c []*enrolled, reason int) {
		t.Helper()
		for _, x := range c {
			mustRevoked(t, e, x.resp.Serial, reason)
			if !seen.has(x.resp.Serial) {
				t.Errorf("the caches were not told of %s", x.resp.Serial)
			}
		}
	}
	t.Run("admin", func(t *testing.T) {
		c := chain("spiffe://example.org/agent/c1", "")
		r := do(t, e.admin.Client(), http.MethodPost, e.admin.URL+"/admin/v1/revoke", "application/json",
			strings.NewReader(`{"serial":"`+c[0].resp.Serial+`","reason":"superseded"}`))
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		check(t, c, 4)
		if !strings.Contains(e.logs.String(), `"lineage_of":"`+c[0].resp.Serial+`"`) {
			t.Error("the descendants' audit lines do not name the revocation they follow")
		}
	})
	t.Run("self", func(t *testing.T) {
		c := chain("spiffe://example.org/agent/c2", "")
		if r := e.postJSON(e.client(c[1].tls), "/v1/revoke", wire.RevokeRequest{Reason: "keyCompromise"}); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		check(t, c[1:], 1)
		if rec, _ := e.store.Certificate(context.Background(), c[0].resp.Serial); rec.Revoked() {
			t.Error("a self-revocation revoked the certificate it was renewed from")
		}
	})
	t.Run("task end", func(t *testing.T) {
		c := chain("spiffe://example.org/agent/c3", "job-7")
		r := do(t, e.admin.Client(), http.MethodPost, e.admin.URL+"/admin/v1/tasks/end", "application/json", strings.NewReader(`{"task":"job-7"}`))
		var out wire.TaskEndResponse
		if err := json.Unmarshal(r.body, &out); err != nil || r.status != 200 || len(out.Revoked) != 3 {
			t.Fatalf("%d %s: want the three certificates of job-7 revoked, each listed once", r.status, r.body)
		}
		check(t, c, 5)
	})
}

// TestRenewRacingRevocation: 32 agents renew in a loop (each onto a new
// key) while each one's first certificate is revoked: every certificate
// of a revoked lineage ends revoked, whenever its renewal committed, and
// no renewal is answered with a live certificate after its lineage was
// revoked.
func TestRenewRacingRevocation(t *testing.T) {
	e := newEnv(t, envOptions{})
	const n = 32
	first := make([]*enrolled, n)
	for i := range first {
		first[i] = e.enroll(fmt.Sprintf("spiffe://example.org/agent/race%d", i), "")
	}
	var wg sync.WaitGroup
	issued := make([][]string, n)
	for i := range n {
		wg.Go(func() {
			hc := e.client(first[i].tls)
			for range 50 {
				k := mustKey(t, ca.ECP256)
				r := e.postJSON(hc, "/v1/renew", wire.RenewRequest{CSR: csrFor(t, k, nil)})
				if r.status != http.StatusCreated {
					if r.status != http.StatusForbidden {
						t.Errorf("agent %d: renew: %d %s", i, r.status, r.body)
					}
					return
				}
				cur := enrolledFrom(t, k, r)
				issued[i] = append(issued[i], cur.resp.Serial)
				hc = e.client(cur.tls)
			}
		})
		wg.Go(func() {
			time.Sleep(time.Duration(i%8) * 3 * time.Millisecond)
			r := do(t, e.admin.Client(), http.MethodPost, e.admin.URL+"/admin/v1/revoke", "application/json",
				strings.NewReader(`{"serial":"`+first[i].resp.Serial+`","reason":"keyCompromise"}`))
			if r.status != http.StatusOK {
				t.Errorf("revoke %d: %d %s", i, r.status, r.body)
			}
		})
	}
	wg.Wait()
	for i := range n {
		for _, s := range issued[i] {
			rec, err := e.store.Certificate(context.Background(), s)
			if err != nil || !rec.Revoked() {
				t.Fatalf("agent %d: %s was renewed from a revoked lineage and is live (%v)", i, s, err)
			}
		}
	}
}

// TestTokenRefusedForEndedTask: once a task is recorded as ended, no
// token names it, even for a certificate not revoked (yet).
func TestTokenRefusedForEndedTask(t *testing.T) {
	e := newEnv(t, envOptions{})
	withTokens(t, e, nil, nil)
	key := mustKey(t, ca.ECP256)
	r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: e.token(agentA), CSR: csrFor(t, key, nil), Task: "t-50"})
	if r.status != http.StatusCreated {
		t.Fatalf("%d %s", r.status, r.body)
	}
	c := enrolledFrom(t, key, r)
	if r, body := e.postForm(e.client(c.tls), tokenForm(testScope, toolsURL)); r.status != 200 {
		t.Fatalf("token before the end: %d %v", r.status, body)
	}
	// The end is recorded; the certificate is not revoked (as between
	// EndTask and the revocations, or after a failed revocation).
	if err := e.store.EndTask(context.Background(), "t-50", e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	r2, body := e.postForm(e.client(c.tls), tokenForm(testScope, toolsURL))
	oauthError(t, r2, body, http.StatusForbidden, "access_denied")
	if !strings.Contains(body["error_description"].(string), "ended") {
		t.Errorf("description %v does not say the task ended", body["error_description"])
	}
}

// TestPolicyClaimsAtRenewal: the attested claims are recorded and given to
// the policy at renewal, so docs/policy.md's no-sandbox rule (sign and
// renew) stops sandbox certificates from renewing and lets others renew.
func TestPolicyClaimsAtRenewal(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, ns := range []string{"sandbox", "prod"} {
		e.provs["k8s-"+ns] = &api.Provisioner{Name: "k8s-" + ns, Type: "k8s-sa", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour,
			Provisioner: &claimsProvisioner{id: provisioners.Identity{SPIFFEID: "spiffe://example.org/ns/" + ns + "/sa/x",
				Claims: map[string]string{"namespace": ns}}}}
	}
	pol := mustPolicy(t, policy.Allow,
		policy.Rule{Name: "no-sandbox", When: "provisioner.startsWith('k8s') && claims['namespace'] == 'sandbox'", Effect: policy.Deny,
			Endpoints: []string{"renew"}})
	withTokens(t, e, nil, pol)
	enroll := func(prov string) *enrolled {
		key := mustKey(t, ca.ECP256)
		r := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: prov, Token: "x", CSR: csrFor(t, key, nil)})
		if r.status != http.StatusCreated {
			t.Fatalf("sign %s: %d %s", prov, r.status, r.body)
		}
		return enrolledFrom(t, key, r)
	}
	prod := enroll("k8s-prod")
	r := e.postJSON(e.client(prod.tls), "/v1/renew", []byte(`{}`))
	if r.status != http.StatusCreated {
		t.Fatalf("renewal of a prod certificate: %d %s", r.status, r.body)
	}
	// The renewed certificate carries the claims on.
	renewed := enrolledFrom(t, prod.key, r)
	if rec, err := e.store.Certificate(context.Background(), renewed.resp.Serial); err != nil || rec.Claims["namespace"] != "prod" {
		t.Fatalf("renewed record %+v, %v: want the claims carried", rec, err)
	}
	sandbox := enroll("k8s-sandbox")
	apiError(t, e.postJSON(e.client(sandbox.tls), "/v1/renew", []byte(`{}`)), http.StatusForbidden, api.CodePolicyDenied)
}
