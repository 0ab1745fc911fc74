package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
)

// BenchmarkToken is one POST /v1/token through the HTTPS handler, without
// TLS or the network: the client certificate check (a store read), the
// form, one policy decision, the ES256 signature and the audit line.
func BenchmarkToken(b *testing.B) {
	c := newBoltCA(b)
	st, authority, trust := c.st, c.authority, c.trust
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
