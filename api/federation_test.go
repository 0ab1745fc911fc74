package api_test

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// fedHandler is an HTTPS handler whose CA is federated with b.example.
func fedHandler(tb testing.TB) (http.Handler, *spiffebundle.Bundle) {
	tb.Helper()
	c := newBoltCA(tb)
	st, authority, trust := c.st, c.authority, c.trust
	other := testHierarchy(tb)
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("b.example"), []*x509.Certificate{other.Root})
	b.SetRefreshHint(42 * time.Second)
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust,
		Provisioners: map[string]*api.Provisioner{"k8s": {Name: "k8s", Provisioner: &claimsProvisioner{}}},
		Federation:   spiffebundle.NewSet(b)})
	if err != nil {
		tb.Fatal(err)
	}
	return srv.HTTPSHandler(), b
}

func getBundle(h http.Handler, rawQuery string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/v1/bundle?"+rawQuery, nil))
	return w
}

func TestFederatedBundleEndpoint(t *testing.T) {
	h, b := fedHandler(t)
	w := getBundle(h, "trust_domain=b.example")
	if w.Code != http.StatusOK {
		t.Fatalf("b.example: %d %s", w.Code, w.Body)
	}
	got, err := spiffebundle.Parse(b.TrustDomain(), w.Body.Bytes())
	if err != nil || !got.Equal(b) {
		t.Fatalf("b.example's bundle: %v\n%s", err, w.Body)
	}
	own := getBundle(h, "trust_domain="+testTD)
	if own.Code != http.StatusOK {
		t.Fatalf("own trust domain: %d", own.Code)
	}
	plain := getBundle(h, "")
	if plain.Body.String() != own.Body.String() {
		t.Fatal("?trust_domain=<own> differs from /v1/bundle")
	}
	for _, tc := range []struct {
		q    string
		code int
	}{
		{"trust_domain=c.example", http.StatusNotFound},
		{"trust_domain=B.example", http.StatusBadRequest},
		{"trust_domain=" + url.QueryEscape("spiffe://b.example"), http.StatusBadRequest},
		{"trust_domain=", http.StatusBadRequest},
		{"trust_domain=b.example&x=1", http.StatusBadRequest},
		{"trust_domain=b.example&trust_domain=b.example", http.StatusBadRequest},
		{"trust_domain=%zz", http.StatusBadRequest},
	} {
		if w := getBundle(h, tc.q); w.Code != tc.code {
			t.Errorf("?%s: %d %s, want %d", tc.q, w.Code, w.Body, tc.code)
		}
	}
}

// FuzzBundleQuery: any query of /v1/bundle is answered 200 with a bundle,
// 400 or 404, never a 5xx.
func FuzzBundleQuery(f *testing.F) {
	f.Add("trust_domain=b.example")
	f.Add("trust_domain=example.org")
	f.Add("trust_domain=c.example&x=1")
	f.Add("trust_domain=%00")
	h, _ := fedHandler(f)
	f.Fuzz(func(t *testing.T, q string) {
		req, err := http.NewRequest(http.MethodGet, "/v1/bundle", nil)
		if err != nil {
			return
		}
		req.URL.RawQuery = q
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case http.StatusOK:
			if _, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("b.example"), w.Body.Bytes()); err != nil {
				if _, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(testTD), w.Body.Bytes()); err != nil {
					t.Fatalf("200 without a bundle: %s", w.Body)
				}
			}
		case http.StatusBadRequest, http.StatusNotFound:
		default:
			t.Fatalf("?%q: %d %s", q, w.Code, w.Body)
		}
	})
}
