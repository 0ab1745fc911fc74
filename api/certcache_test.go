package api_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// getReused is GET path with c, and whether it went over a connection
// already open.
func (e *env) getReused(c *http.Client, path string) (*response, bool) {
	e.t.Helper()
	reused := false
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	}), http.MethodGet, e.ts.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, reused
}

// TestClientCertCacheRevokedOnKeepAlive: a client certificate checked
// from the cache on a keep-alive connection is refused with 403
// certificate_revoked on its very next request after its revocation (the
// revocation service's notifier dropped it), on the same connection;
// another client's record stays cached.
func TestClientCertCacheRevokedOnKeepAlive(t *testing.T) {
	cc := api.NewClientCerts(0, nil)
	e := newEnv(t, envOptions{clientCerts: cc})
	c := e.enroll("spiffe://example.org/agent/cached", "")
	other := e.enroll("spiffe://example.org/agent/bystander", "")
	hc, hcOther := e.client(c.tls), e.client(other.tls)
	for range 3 {
		if r, _ := e.getReused(hc, "/v1/workload/definitions"); r.status != http.StatusOK {
			t.Fatalf("before the revocation: %d %s", r.status, r.body)
		}
	}
	if r, _ := e.getReused(hcOther, "/v1/workload/definitions"); r.status != http.StatusOK {
		t.Fatalf("bystander: %d %s", r.status, r.body)
	}
	if cc.Len() != 2 {
		t.Fatalf("%d records cached, want 2", cc.Len())
	}
	if r := e.adminPost("/admin/v1/revoke", wire.RevokeRequest{Serial: c.resp.Serial}); r.status != http.StatusOK {
		t.Fatalf("admin revoke: %d %s", r.status, r.body)
	}
	if cc.Len() != 1 {
		t.Fatalf("%d records cached after the revocation, want the bystander's alone", cc.Len())
	}
	for range 3 {
		r, reused := e.getReused(hc, "/v1/workload/definitions")
		apiError(t, r, http.StatusForbidden, api.CodeCertificateRevoked)
		if !reused {
			t.Error("the request after the revocation opened a new connection; want the keep-alive one")
		}
	}
	if r, _ := e.getReused(hcOther, "/v1/workload/definitions"); r.status != http.StatusOK {
		t.Fatalf("bystander after the revocation: %d %s", r.status, r.body)
	}
	// A self-revocation takes the same path.
	if r := e.postJSON(hcOther, "/v1/revoke", wire.RevokeRequest{}); r.status != http.StatusOK {
		t.Fatalf("self-revoke: %d %s", r.status, r.body)
	}
	r, _ := e.getReused(hcOther, "/v1/workload/definitions")
	apiError(t, r, http.StatusForbidden, api.CodeCertificateRevoked)
	if cc.Len() != 0 {
		t.Fatalf("%d records cached after both revocations", cc.Len())
	}
}

// TestClientCertCacheRenewChecksStore: renewal trusts the cache for the
// client certificate check, and the issuing transaction checks the
// parent again: a revocation written to the store behind the cache's
// back (no notifier: what the freshness bound covers on etcd) still
// refuses the renewal, and issues nothing.
func TestClientCertCacheRenewChecksStore(t *testing.T) {
	cc := api.NewClientCerts(0, nil)
	e := newEnv(t, envOptions{clientCerts: cc})
	c := e.enroll("spiffe://example.org/agent/renew-cached", "")
	hc := e.client(c.tls)
	if r, _ := e.getReused(hc, "/v1/workload/definitions"); r.status != http.StatusOK || cc.Len() != 1 {
		t.Fatalf("warming the cache: %d %s, %d cached", r.status, r.body, cc.Len())
	}
	if _, err := e.store.Revoke(context.Background(), c.resp.Serial, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The cache was not told: the check passes from it...
	if r, _ := e.getReused(hc, "/v1/workload/definitions"); r.status != http.StatusOK {
		t.Fatalf("a check from the cache: %d %s", r.status, r.body)
	}
	// ...but the issuing transaction refuses the revoked parent.
	r := e.postJSON(hc, "/v1/renew", []byte{})
	apiError(t, r, http.StatusForbidden, api.CodeCertificateRevoked)
	recs, err := e.store.ListCertificates(context.Background(), store.ListOptions{Limit: 10})
	if err != nil || len(recs) != 1 {
		t.Fatalf("records after the refused renewal: %d, %v; want the one enrolled", len(recs), err)
	}
}
