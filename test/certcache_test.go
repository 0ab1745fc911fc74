package test

import (
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// workloadDefs is one mTLS request the client certificate check guards
// (GET /v1/workload/definitions, read only).
func workloadDefs(hc *http.Client, c *testCA) (apiResp, error) {
	return tryDo(hc, http.MethodGet, c.URL+"/v1/workload/definitions", "", nil)
}

// TestClientCertCacheRevoked: on bbolt, a client certificate checked from
// the API's cache on a keep-alive connection is refused with 403
// certificate_revoked on its very next request once `agentca revoke` has
// returned (the daemon's one revocation notifier drops it from the cache).
func TestClientCertCacheRevoked(t *testing.T) {
	c := newCA(t, caOptions{})
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/cached"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	cr := readCreds(t, dir)
	hc := c.client(cr.tlsCert())
	for range 5 {
		if r, err := workloadDefs(hc, c); err != nil || r.status != http.StatusOK {
			t.Fatalf("before the revocation: %+v %v", r, err)
		}
	}
	if hits, _ := scrape(t, c).sum("agentca_client_cert_cache_lookups_total", `result="hit"`); hits < 4 {
		t.Fatalf("%v checks answered from the cache, want 4", hits)
	}
	mustRun(t, "revoke", "--dir", c.Dir, "--serial", cr.leaf.SerialNumber.Text(16))
	for i := range 5 {
		r, err := workloadDefs(hc, c)
		if err != nil || r.status != http.StatusForbidden || !strings.Contains(string(r.body), "certificate_revoked") {
			t.Fatalf("request %d after the revocation: %d %s %v; want 403 certificate_revoked", i, r.status, r.body, err)
		}
	}
}

// TestEtcdClientCertCacheRevoked: replica B checks a client certificate
// from its cache; a revocation made through replica A reaches B's cache
// through B's store watch: once A has answered and the staleness bound
// (ocsp.max_staleness, 1s by default) has passed, B refuses every request
// with 403 certificate_revoked, on the keep-alive connection the client
// used before, and never answers from its cache again. Then B is frozen
// (SIGSTOP) past the bound while another certificate it cached is revoked
// through A: after SIGCONT its first answer is already 403 (its watch not
// proven fresh, B reads the store), never an answer from its cache.
func TestEtcdClientCertCacheRevoked(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	var crs []*creds
	for _, name := range []string{"a", "b"} {
		dir := filepath.Join(t.TempDir(), name)
		if r := a.enroll(a.token("spiffe://example.org/agent/cached-"+name), dir); r.code != 0 {
			t.Fatalf("enroll:\n%s", r)
		}
		crs = append(crs, readCreds(t, dir))
	}
	cr, paused := crs[0], crs[1]
	hcB, hcPaused := b.client(cr.tlsCert()), b.client(paused.tlsCert())
	// Until B answers both from its cache (its watch proven fresh).
	var hits float64
	for _, hc := range []*http.Client{hcB, hcPaused} {
		eventually(t, 20*time.Second, 20*time.Millisecond, "B to check the certificate from its cache", func() bool {
			if r, err := workloadDefs(hc, b); err != nil || r.status != http.StatusOK {
				t.Fatalf("B before the revocation: %+v %v", r, err)
			}
			h, _ := scrape(t, b).sum("agentca_client_cert_cache_lookups_total", `result="hit"`)
			defer func() { hits = h }()
			return h > hits
		})
	}
	mustRun(t, "revoke", "--dir", a.Dir, "--serial", cr.leaf.SerialNumber.Text(16))
	revoked := time.Now()
	const bound = time.Second // ocsp.max_staleness
	var seen time.Duration
	for seen == 0 {
		start := time.Now()
		r, err := workloadDefs(hcB, b)
		switch {
		case err != nil:
			t.Fatal(err)
		case r.status == http.StatusForbidden && strings.Contains(string(r.body), "certificate_revoked"):
			seen = time.Since(revoked)
		case r.status != http.StatusOK:
			t.Fatalf("B: %d %s", r.status, r.body)
		case start.Sub(revoked) > bound:
			t.Fatalf("B accepted the certificate %s after its revocation through A, past the staleness bound", start.Sub(revoked))
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("B refused the certificate revoked through A after %s", seen)
	for i := range 20 {
		r, err := workloadDefs(hcB, b)
		if err != nil || r.status != http.StatusForbidden || !strings.Contains(string(r.body), "certificate_revoked") {
			t.Fatalf("B, request %d after refusing: %d %s %v; want 403 certificate_revoked", i, r.status, r.body, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	b.mu.Lock()
	bp := b.proc
	b.mu.Unlock()
	bp.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			bp.signal(t, syscall.SIGCONT)
		}
	}()
	mustRun(t, "revoke", "--dir", a.Dir, "--serial", paused.leaf.SerialNumber.Text(16))
	time.Sleep(time.Until(stopped.Add(bound + 500*time.Millisecond)))
	bp.signal(t, syscall.SIGCONT)
	resumed = true
	for i := range 10 {
		r, err := workloadDefs(hcPaused, b)
		if err != nil || r.status != http.StatusForbidden || !strings.Contains(string(r.body), "certificate_revoked") {
			t.Fatalf("B, request %d after SIGCONT: %d %s %v; want 403 certificate_revoked", i, r.status, r.body, err)
		}
	}
}
