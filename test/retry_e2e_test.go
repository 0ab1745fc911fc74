package test

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agentca/agentca/wire"
)

// retryResp decodes a 200 or 201 SignResponse.
func retryResp(t *testing.T, r apiResp, status int) (*wire.SignResponse, *x509.Certificate) {
	t.Helper()
	if r.status != status {
		t.Fatalf("want %d, got %d: %s", status, r.status, r.body)
	}
	var sr wire.SignResponse
	if err := json.Unmarshal(r.body, &sr); err != nil {
		t.Fatalf("sign response: %v: %s", err, r.body)
	}
	return &sr, parseCerts(t, []byte(sr.Certificate))[0]
}

// TestEtcdRetriesAndLineage, on two replicas of one etcd cluster: a
// client that drops its connection after sending /v1/sign to one replica
// retries on the other with the same token and key and gets the same
// certificate (200); with another key 401. A renewal retried on the other
// replica gets the same child; a second renewal onto another key is
// refused (renewal_reused) and the lineage is revoked, which the first
// replica's OCSP responder shows for every serial.
func TestEtcdRetriesAndLineage(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	const id = "spiffe://example.org/agent/retry"
	tok := a.token(id)
	key := newECKey(t)
	body, _ := json.Marshal(signBody("join", tok, csrPEM(t, key, &x509.CertificateRequest{}), ""))

	// Send to A, wait until A recorded it, hang up unread.
	conn, err := tls.Dial("tcp", a.HTTPS, &tls.Config{RootCAs: a.pool(), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/sign HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", a.HTTPS, len(body), body)
	var recorded []wire.CertInfo
	eventually(t, 10*time.Second, 50*time.Millisecond, "the dropped request to be recorded", func() bool {
		recorded = a.certs(id)
		return len(recorded) == 1
	})
	conn.Close()

	hc := b.client(nil)
	defer hc.CloseIdleConnections()
	retry := postJSON(t, hc, b.URL+"/v1/sign", signBody("join", tok, csrPEM(t, key, &x509.CertificateRequest{}), ""))
	sr, leaf := retryResp(t, retry, http.StatusOK)
	if normSerial(t, sr.Serial) != normSerial(t, recorded[0].Serial) || !samePublicKey(leaf.PublicKey, key.Public()) {
		t.Fatalf("retry got %s, want %s", sr.Serial, recorded[0].Serial)
	}
	wantError(t, postJSON(t, hc, b.URL+"/v1/sign", signBody("join", tok, csrPEM(t, newECKey(t), &x509.CertificateRequest{}), "")),
		http.StatusUnauthorized, "unauthorized")
	if n := len(a.certs(id)); n != 1 {
		t.Fatalf("%d certificates recorded, want 1", n)
	}

	chain := parseCerts(t, []byte(sr.Chain[0]))
	issuer := chain[0]
	cur := &tls.Certificate{Certificate: [][]byte{leaf.Raw, issuer.Raw}, PrivateKey: key, Leaf: leaf}
	renew := func(c *testCA, k crypto.Signer) apiResp {
		hc := c.client(cur)
		defer hc.CloseIdleConnections()
		return postJSON(t, hc, c.URL+"/v1/renew", map[string]string{"csr": csrPEM(t, k, &x509.CertificateRequest{})})
	}
	k2 := newECKey(t)
	child, childLeaf := retryResp(t, renew(a, k2), http.StatusCreated)
	again, _ := retryResp(t, renew(b, k2), http.StatusOK)
	if again.Serial != child.Serial {
		t.Fatalf("renewal retried on B got %s, want %s", again.Serial, child.Serial)
	}
	wantError(t, renew(b, newECKey(t)), http.StatusForbidden, "renewal_reused")
	ohc := &http.Client{Timeout: 5 * time.Second}
	for _, l := range []*x509.Certificate{leaf, childLeaf} {
		eventually(t, 5*time.Second, 50*time.Millisecond, "A's OCSP to show "+l.SerialNumber.Text(16)+" revoked", func() bool {
			r, err := etcdOCSP(ohc, a, l, issuer)
			return err == nil && r.Status == ocsp.Revoked && r.RevocationReason == ocsp.KeyCompromise
		})
	}
	if !bytes.Contains([]byte(b.proc.log()), []byte("audit=renewal_reused")) {
		t.Error("B logged no audit=renewal_reused line")
	}
}
