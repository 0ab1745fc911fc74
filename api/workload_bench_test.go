package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
)

// issuanceBench is a CA with a bbolt store behind the HTTPS handler
// (without TLS or the network), and one node certificate of provisioner
// k8s with the attested claim kubernetes.io.namespace=prod.
type issuanceBench struct {
	handler   http.Handler
	authority *ca.Authority
	st        *bolt.Store
	node      *x509.Certificate
}

func newIssuanceBench(b *testing.B) *issuanceBench {
	c := newBoltCA(b)
	st, authority, trust := c.st, c.authority, c.trust
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust, Workloads: st,
		Provisioners: map[string]*api.Provisioner{"k8s": {Name: "k8s", Provisioner: &claimsProvisioner{},
			DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour}}})
	if err != nil {
		b.Fatal(err)
	}
	bench := &issuanceBench{handler: srv.HTTPSHandler(), authority: authority, st: st}
	bench.node = bench.issue(b, "spiffe://example.org/node/bench")
	return bench
}

// issue records a certificate of provisioner k8s for id.
func (ib *issuanceBench) issue(b *testing.B, id string) *x509.Certificate {
	issued, err := ib.authority.Issue(context.Background(), &ca.Request{PublicKey: mustKey(b, ca.ECP256).Public(), SPIFFEID: id,
		Provisioner: "k8s", TTL: time.Hour, Claims: map[string]string{"kubernetes.io.namespace": "prod"}})
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		b.Fatal(err)
	}
	return leaf
}

// post sends body to path as the client certificate leaf and returns the
// response's certificate, parsed.
func (ib *issuanceBench) post(b *testing.B, path string, body []byte, leaf *x509.Certificate) *x509.Certificate {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	w := httptest.NewRecorder()
	ib.handler.ServeHTTP(w, r)
	if w.Code != http.StatusCreated && w.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", path, w.Code, w.Body)
	}
	var resp wire.SignResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		b.Fatal(err)
	}
	return parsePEMCert(b, resp.Certificate)
}

// callersPerProc makes RunParallel run 64 callers whatever GOMAXPROCS
// is, as the daemon sees them under load (bbolt commits their records in
// groups).
func callersPerProc() int { return max(1, 64/runtime.GOMAXPROCS(0)) }

// BenchmarkRenew is one POST /v1/renew (empty body: the same key) through
// the HTTPS handler: the client certificate check, the policy, the
// signature, the record and its lineage in one bbolt transaction, the
// audit line. Each goroutine renews the certificate its previous renewal
// returned (renewing one twice would be a retry answered from the store),
// so each call parses the new leaf too. 64 callers.
func BenchmarkRenew(b *testing.B) {
	ib := newIssuanceBench(b)
	b.ReportAllocs()
	b.SetParallelism(callersPerProc())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		leaf := ib.issue(b, "spiffe://example.org/agent/renew")
		for pb.Next() {
			leaf = ib.post(b, "/v1/renew", nil, leaf)
		}
	})
}

// BenchmarkWorkloadSign is one POST /v1/workload/sign through the HTTPS
// handler, beside BenchmarkRenew: the node certificate check, reading
// the definitions, rendering the template against the caller's
// selectors, the node allowance (by provisioner, or also by a CEL
// node_condition over the node's claims), the CSR, the policy, the
// signature and the record, the node's revocation re-read, and parsing
// the returned leaf. 64 callers.
func BenchmarkWorkloadSign(b *testing.B) {
	for _, tc := range []struct{ name, cond string }{
		{"provisioner", ""},
		{"condition", `claims["kubernetes.io.namespace"] == "prod"`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ib := newIssuanceBench(b)
			def := workloads.Definition{ID: "bench", SPIFFEID: "spiffe://example.org/w/{{unix:uid}}", Selectors: []string{"unix:gid:100"},
				NodeProvisioners: []string{"k8s"}, NodeCondition: tc.cond}
			if _, err := ib.st.UpdateWorkloads(context.Background(), func(s *workloads.Set) error {
				s.Definitions = append(s.Definitions, def)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			body, err := json.Marshal(wire.WorkloadSignRequest{SPIFFEID: "spiffe://example.org/w/1000",
				Selectors: []string{"unix:uid:1000", "unix:gid:100", "unix:user:svc"}, CSR: csrFor(b, mustKey(b, ca.ECP256), nil)})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(callersPerProc())
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if svid := ib.post(b, "/v1/workload/sign", body, ib.node); !strings.HasSuffix(svid.URIs[0].String(), "/w/1000") {
						b.Fatalf("SVID for %s", svid.URIs[0])
					}
				}
			})
		})
	}
}
