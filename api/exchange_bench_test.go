package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/exchange"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/wire"
)

// BenchmarkTokenExchange is one RFC 8693 exchange through the HTTPS
// handler, without TLS or the network: the client certificate check, the
// form, the subject token's ES256 verification, a policy decision over
// the chain, the ES256 signature and the audit line.
func BenchmarkTokenExchange(b *testing.B) {
	c := newBoltCA(b)
	st, authority, trust := c.st, c.authority, c.trust
	pol, err := policy.Compile(policy.File{Rules: []policy.Rule{
		{Name: "no-repeat-beyond-self", When: "chain_depth > 3", Effect: policy.Deny, Endpoints: []string{"token-exchange"}},
	}}, policy.Allow)
	if err != nil {
		b.Fatal(err)
	}
	tokens := &api.TokenOptions{Signer: mustKey(b, ca.ECP256), Issuer: "https://ca.example.org", Scopes: []string{testScope}}
	own, err := tokens.TokenKeys()
	if err != nil {
		b.Fatal(err)
	}
	v, err := exchange.New(exchange.Config{TokenIssuer: tokens.Issuer, TokenKeys: own})
	if err != nil {
		b.Fatal(err)
	}
	tokens.Exchange = &api.ExchangeOptions{Validator: v}
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust,
		Provisioners: map[string]*api.Provisioner{"k8s": {Name: "k8s", Provisioner: &claimsProvisioner{}}},
		Tokens:       tokens,
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
	state := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	post := func(body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.TLS = state
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w
	}
	// The subject token: A's own token with A as its audience.
	w := post(url.Values{"grant_type": {"client_credentials"}, "scope": {testScope}, "audience": {agentA}}.Encode())
	var tr wire.AccessTokenResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &tr) != nil {
		b.Fatalf("subject token: %d %s", w.Code, w.Body)
	}
	body := url.Values{"grant_type": {api.GrantTypeTokenExchange}, "subject_token": {tr.AccessToken},
		"subject_token_type": {exchange.TypeAccessToken}, "resource": {toolsURL}}.Encode()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if w := post(body); w.Code != http.StatusOK {
				b.Fatalf("%d %s", w.Code, w.Body)
			}
		}
	})
}
