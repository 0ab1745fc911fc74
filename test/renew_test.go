package test

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/wire"
)

// TestRenew exercises POST /v1/renew over mTLS and `agentca renew`, and
// the refusals: no client certificate, another CA's certificate, an
// expired certificate, a CSR reusing the key; a CSR naming another SPIFFE
// ID is renewed under the old one.
func TestRenew(t *testing.T) {
	t.Parallel()
	// min_ttl 2s so that a certificate can expire during the test.
	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "2s"}})
	ca.start()
	const id = "spiffe://example.org/agent/renew"
	renewURL := ca.URL + "/v1/renew"

	enrolled := func(t *testing.T, extra ...string) (string, *creds) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "creds")
		if r := ca.enroll(ca.token(id), out, extra...); r.code != 0 {
			t.Fatalf("enroll: %s", r)
		}
		return out, readCreds(t, out)
	}

	// Start the expired case first: it needs its certificate to expire.
	_, short := enrolled(t, "--ttl", "3s")
	if life := short.leaf.NotAfter.Sub(short.leaf.NotBefore); life > 3*time.Second+time.Minute {
		t.Fatalf("--ttl 3s gave a %s certificate", life)
	}

	t.Run("API with a new key", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		key := newECKey(t)
		sr, leaf := wantIssued(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, key, nil)}))
		if sr.SPIFFEID != id || spiffeIDOf(t, leaf) != id {
			t.Errorf("renewed as %s / %v, want %s", sr.SPIFFEID, leaf.URIs, id)
		}
		if leaf.SerialNumber.Cmp(cur.leaf.SerialNumber) == 0 {
			t.Errorf("renewal kept the serial %x", leaf.SerialNumber)
		}
		if !samePublicKey(leaf.PublicKey, key.Public()) {
			t.Errorf("the renewed certificate is not for the CSR's key")
		}
		chain := parseCerts(t, []byte(joinPEM(sr.Chain)))
		verifyLeaf(t, leaf, chain, ca.pool())
		if leaf.NotAfter.Sub(leaf.NotBefore) > 6*time.Minute {
			t.Errorf("renewed lifetime %s, want the 5m default", leaf.NotAfter.Sub(leaf.NotBefore))
		}
		recs := ca.certs(id)
		if !renewedFrom(recs, leaf, cur.leaf) {
			t.Errorf("the store does not record %x as renewed from %x: %+v", leaf.SerialNumber, cur.leaf.SerialNumber, recs)
		}
	})

	t.Run("API without CSR keeps the key", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		_, leaf := wantIssued(t, do(t, hc, http.MethodPost, renewURL, "application/json", nil))
		if leaf.SerialNumber.Cmp(cur.leaf.SerialNumber) == 0 {
			t.Errorf("renewal kept the serial %x", leaf.SerialNumber)
		}
		if !samePublicKey(leaf.PublicKey, cur.key.Public()) {
			t.Errorf("a renewal without CSR changed the key")
		}
		if spiffeIDOf(t, leaf) != id {
			t.Errorf("renewed as %v, want %s", leaf.URIs, id)
		}
	})

	t.Run("CLI", func(t *testing.T) {
		out, cur := enrolled(t)
		r := runCLI(t, "renew", "--ca", ca.URL, "--out", out)
		if r.code != 0 {
			t.Fatalf("agentca renew: %s", r)
		}
		got := readCreds(t, out)
		onlyCredFiles(t, out)
		if got.leaf.SerialNumber.Cmp(cur.leaf.SerialNumber) == 0 {
			t.Errorf("renew left the serial %x in cert.pem", cur.leaf.SerialNumber)
		}
		if samePublicKey(got.leaf.PublicKey, cur.key.Public()) {
			t.Errorf("renew kept the key; by default it makes a new one")
		}
		if got.keyMode != 0o600 {
			t.Errorf("key.pem mode %o after renew, want 600", got.keyMode)
		}
		if spiffeIDOf(t, got.leaf) != id {
			t.Errorf("renewed as %v, want %s", got.leaf.URIs, id)
		}
		verifyLeaf(t, got.leaf, got.chain, ca.pool())
		if len(got.bundle) != 1 || !got.bundle[0].Equal(ca.Roots[0]) {
			t.Errorf("bundle.pem after renew is not the root")
		}
		if !renewedFrom(ca.certs(id), got.leaf, cur.leaf) {
			t.Errorf("the store does not record the CLI renewal as renewed from %x", cur.leaf.SerialNumber)
		}
		// The old certificate is still unexpired, but the files now
		// hold the new one: renewing again chains from it.
		if r := runCLI(t, "renew", "--ca", ca.URL, "--out", out); r.code != 0 {
			t.Fatalf("second agentca renew: %s", r)
		}
		again := readCreds(t, out)
		if !renewedFrom(ca.certs(id), again.leaf, got.leaf) {
			t.Errorf("the second renewal is not recorded as renewed from %x", got.leaf.SerialNumber)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, newECKey(t), nil)}), http.StatusUnauthorized, "client_certificate_required")
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		other := newCA(t, caOptions{})
		other.start()
		out := filepath.Join(t.TempDir(), "creds")
		if r := other.enroll(other.token(id), out); r.code != 0 {
			t.Fatalf("enroll at the other CA: %s", r)
		}
		foreign := readCreds(t, out)
		hc := ca.client(foreign.tlsCert())
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, newECKey(t), nil)}), http.StatusUnauthorized, "unknown_certificate")
	})

	t.Run("expired certificate", func(t *testing.T) {
		waitUntil(short.leaf.NotAfter.Add(time.Second))
		hc := ca.client(short.tlsCert())
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, newECKey(t), nil)}), http.StatusForbidden, "certificate_expired")
		wantError(t, do(t, hc, http.MethodPost, renewURL, "application/json", nil), http.StatusForbidden, "certificate_expired")
	})

	t.Run("revoked certificate", func(t *testing.T) {
		_, cur := enrolled(t)
		mustRun(t, "revoke", "--dir", ca.Dir, "--serial", cur.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, newECKey(t), nil)}), http.StatusForbidden, "certificate_revoked")
	})

	t.Run("CSR naming another SPIFFE ID", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		evil, _ := url.Parse("spiffe://example.org/admin/ops")
		csr := csrPEM(t, newECKey(t), &x509.CertificateRequest{URIs: []*url.URL{evil}, DNSNames: []string{"evil.example.org"}})
		sr, leaf := wantIssued(t, postJSON(t, hc, renewURL, map[string]string{"csr": csr}))
		if sr.SPIFFEID != id || spiffeIDOf(t, leaf) != id {
			t.Errorf("renewed as %s / %v, want the old ID %s", sr.SPIFFEID, leaf.URIs, id)
		}
		if len(leaf.DNSNames) != 0 {
			t.Errorf("the CSR's DNS names were copied: %v", leaf.DNSNames)
		}
	})

	t.Run("CSR reusing the current key", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, cur.key, nil)}), http.StatusBadRequest, "bad_key")
	})

	t.Run("renewal ttl above max_ttl", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		wantError(t, postJSON(t, hc, renewURL, map[string]string{"csr": csrPEM(t, newECKey(t), nil), "ttl": "2h"}), http.StatusBadRequest, "bad_ttl")
	})

	t.Run("renewal body over 64 KiB", func(t *testing.T) {
		_, cur := enrolled(t)
		hc := ca.client(cur.tlsCert())
		defer hc.CloseIdleConnections()
		body := `{"csr":"` + strings.Repeat("A", 70<<10) + `"}`
		wantError(t, do(t, hc, http.MethodPost, renewURL, "application/json", strings.NewReader(body)), http.StatusRequestEntityTooLarge, "request_too_large")
	})

	hc := ca.client(nil)
	defer hc.CloseIdleConnections()
	if r := do(t, hc, http.MethodGet, ca.URL+"/health", "", nil); r.status != http.StatusOK {
		t.Errorf("/health after the renewals: %d %s", r.status, r.body)
	}
}

// renewedFrom reports whether recs record leaf as renewed from prev.
func renewedFrom(recs []wire.CertInfo, leaf, prev *x509.Certificate) bool {
	for _, r := range recs {
		if normSerialNoT(r.Serial) == leaf.SerialNumber.Text(16) {
			return normSerialNoT(r.RenewedFrom) == prev.SerialNumber.Text(16)
		}
	}
	return false
}

func normSerialNoT(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}

func joinPEM(ps []string) string {
	var b bytes.Buffer
	for _, p := range ps {
		b.WriteString(p)
	}
	return b.String()
}
