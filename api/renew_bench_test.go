package api_test

import (
	"crypto"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/agentca/agentca/ca"
)

// BenchmarkRenewCSR is one POST /v1/renew with a fresh key (a CSR, the
// agent's default) through the HTTPS handler, beside BenchmarkRenew: the
// client certificate check, the CSR's proof of possession, the policy,
// the signature, the record and its lineage in one bbolt transaction,
// the audit line. Each goroutine renews the certificate its previous
// renewal returned, each time onto another key of a pool of 16. 64
// callers.
func BenchmarkRenewCSR(b *testing.B) {
	ib := newIssuanceBench(b)
	const pool = 16
	bodies := make([][]byte, pool)
	pubs := make([]crypto.PublicKey, pool)
	for i := range bodies {
		key := mustKey(b, ca.ECP256)
		body, err := json.Marshal(map[string]string{"csr": csrFor(b, key, nil)})
		if err != nil {
			b.Fatal(err)
		}
		bodies[i], pubs[i] = body, key.Public()
	}
	var next atomic.Uint32
	b.ReportAllocs()
	b.SetParallelism(callersPerProc())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		leaf := ib.issue(b, "spiffe://example.org/agent/renew")
		k := int(next.Add(1))
		for pb.Next() {
			k = (k + 1) % pool
			leaf = ib.post(b, "/v1/renew", bodies[k], leaf)
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pubs[k]) {
				b.Fatal("the renewed certificate does not carry the CSR's key")
			}
		}
	})
}
