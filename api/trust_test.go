package api_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestBundle(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := do(t, e.client(nil), http.MethodGet, e.ts.URL+"/v1/bundle", "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/bundle: %d %q", r.status, r.header.Get("Content-Type"))
	}
	td := spiffeid.RequireTrustDomainFromString(testTD)
	b, err := spiffebundle.Parse(td, r.body)
	if err != nil {
		t.Fatalf("spiffebundle.Parse: %v\n%s", err, r.body)
	}
	if auth := b.X509Authorities(); len(auth) != 1 || !auth[0].Equal(e.h.Root) {
		t.Fatalf("bundle authorities = %d certificates, want the root", len(auth))
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 7 {
		t.Errorf("spiffe_sequence = %d, %v; want 7", seq, ok)
	}
	if hint, ok := b.RefreshHint(); !ok || hint != 2*time.Minute {
		t.Errorf("spiffe_refresh_hint = %s, %v; want 2m", hint, ok)
	}
	var raw struct {
		Keys []struct {
			Use string   `json:"use"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw.Keys) != 1 || raw.Keys[0].Use != "x509-svid" {
		t.Errorf("bundle keys = %+v, %v; want one x509-svid key", raw.Keys, err)
	}
}

func TestRoots(t *testing.T) {
	e := newEnv(t, envOptions{})
	check := func(t *testing.T, body []byte, want ...*x509.Certificate) {
		t.Helper()
		var got []*x509.Certificate
		rest := body
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				t.Fatalf("PEM block %q in /v1/roots", block.Type)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, c)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("non-PEM data in /v1/roots: %q", rest)
		}
		if len(got) != len(want) {
			t.Fatalf("%d roots, want %d", len(got), len(want))
		}
		for i := range want {
			if !got[i].Equal(want[i]) {
				t.Fatalf("root %d is %s, want %s", i, got[i].Subject, want[i].Subject)
			}
		}
	}
	r := do(t, e.client(nil), http.MethodGet, e.ts.URL+"/v1/roots", "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/pem-certificate-chain" {
		t.Fatalf("GET /v1/roots: %d %q", r.status, r.header.Get("Content-Type"))
	}
	check(t, r.body, e.h.Root)

	// A staged anchor is published next to the active one.
	staged, err := ca.NewHierarchy("staged", ca.ECP384, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	trust, err := api.NewTrust(testTD, []*x509.Certificate{e.h.Root, staged.Root}, 8, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetTrust(trust)
	r = do(t, e.client(nil), http.MethodGet, e.ts.URL+"/v1/roots", "", nil)
	check(t, r.body, e.h.Root, staged.Root)
	r = do(t, e.client(nil), http.MethodGet, e.ts.URL+"/v1/bundle", "", nil)
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(testTD), r.body)
	if err != nil || len(b.X509Authorities()) != 2 || !b.HasX509Authority(staged.Root) {
		t.Fatalf("bundle after SetTrust: %v", err)
	}
	// A certificate of the staged hierarchy now passes the chain check
	// of /v1/renew (and is then unknown to the store).
	twin := newEnv(t, envOptions{hierarchy: staged})
	c := twin.enroll("spiffe://example.org/agent/staged", "")
	apiError(t, e.postJSON(e.client(c.tls), "/v1/renew", []byte{}), http.StatusUnauthorized, api.CodeUnknownCertificate)
}

func TestNewTrustRefusesBadTrustDomain(t *testing.T) {
	if _, err := api.NewTrust("Not A Domain", []*x509.Certificate{testHierarchy(t).Root}, 1, time.Minute); err == nil {
		t.Fatal("NewTrust accepted a bad trust domain")
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, u := range []struct {
		name string
		c    *http.Client
		url  string
	}{{"https", e.client(nil), e.ts.URL}, {"http", http.DefaultClient, e.plain.URL}} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			t.Run(u.name+" "+m, func(t *testing.T) {
				r := do(t, u.c, m, u.url+"/health", "", nil)
				if r.status != 200 {
					t.Fatalf("status %d", r.status)
				}
				if m == http.MethodGet && strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
					t.Fatalf("body %q", r.body)
				}
			})
		}
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.enroll("spiffe://example.org/agent/m", "")
	bad := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: "nope", CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
	apiError(t, bad, 401, api.CodeUnauthorized)
	unk := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "attacker-chosen-label", Token: "x", CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
	apiError(t, unk, 400, api.CodeUnknownProvisioner)
	c := e.enroll("spiffe://example.org/agent/m2", "")
	if r := e.postJSON(e.client(c.tls), "/v1/renew", []byte{}); r.status != 201 {
		t.Fatalf("renew: %d %s", r.status, r.body)
	}

	r := do(t, http.DefaultClient, http.MethodGet, e.plain.URL+"/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d", r.status)
	}
	body := string(r.body)
	for _, want := range []string{
		`agentca_issuance_total{operation="sign",outcome="issued",provisioner="join"} 2`,
		`agentca_issuance_total{operation="sign",outcome="unauthorized",provisioner="join"} 1`,
		`agentca_issuance_total{operation="sign",outcome="unknown_provisioner",provisioner="unknown"} 1`,
		`agentca_issuance_total{operation="renew",outcome="issued",provisioner="join"} 1`,
		`agentca_issuance_duration_seconds_count{operation="sign",outcome="issued",provisioner="join"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, "attacker-chosen-label") {
		t.Error("a caller-chosen provisioner name became a metric label")
	}
	if !regexp.MustCompile(`(?m)^# TYPE agentca_issuance_total counter$`).MatchString(body) {
		t.Error("agentca_issuance_total is not a counter")
	}
	// /metrics is not on the HTTPS listener.
	apiError(t, do(t, e.client(nil), http.MethodGet, e.ts.URL+"/metrics", "", nil), 404, api.CodeNotFound)
}
