package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/store/bolt"
)

// BenchmarkToken is one POST /v1/token through the HTTPS handler, without
// TLS or the network: the client certificate check (a store read), the
// form, one policy decision, the ES256 signature and the audit line.
func BenchmarkToken(b *testing.B) {
	h := testHierarchy(b)
	st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		b.Fatal(err)
	}
	authority, err := ca.New(ca.Options{TrustDomain: testTD, Issuer: iss, Recorder: st})
	if err != nil {
		b.Fatal(err)
	}
	trust, err := api.NewTrust(testTD, []*x509.Certificate{h.Root}, 1, time.Minute, iss)
	if err != nil {
		b.Fatal(err)
	}
	pol, err := policy.Compile(policy.File{Rules: []policy.Rule{
		{Name: "no-admin", When: "'tools.admin' in scope && !spiffe_id.startsWith('spiffe://example.org/ops/')", Effect: policy.Deny, Endpoints: []string{"token"}},
	}}, policy.Allow)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust,
		Provisioners: map[string]*api.Provisioner{"k8s": {Name: "k8s", Provisioner: &claimsProvisioner{}}},
		Tokens:       &api.TokenOptions{Signer: mustKey(b, ca.ECP256), Issuer: "https://ca.example.org", Scopes: []string{testScope}},
		ClientCerts:  api.NewClientCerts(0, nil)}) // as the daemon does
	if err != nil {
		b.Fatal(err)
	}
	srv.SetPolicy(&api.Policy{Rules: pol})
	issued, err := authority.Issue(context.Background(), &ca.Request{PublicKey: mustKey(b, ca.ECP256).Public(), SPIFFEID: agentA, Provisioner: "k8s"})
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		b.Fatal(err)
	}
	handler := srv.HTTPSHandler()
	body := tokenForm(testScope, toolsURL).Encode()
	state := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.TLS = state
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}
