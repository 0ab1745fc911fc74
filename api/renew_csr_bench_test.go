package api_test

import (
	"encoding/json"
	"testing"

	"github.com/agentca/agentca/ca"
)

// BenchmarkRenewCSR is BenchmarkRenew with a fresh key: each POST
// /v1/renew carries a CSR (two keys made beforehand, used in turn, so
// each renewal changes the key as a rotation does). Besides what
// BenchmarkRenew does, the CA checks the CSR's signature: the same work
// as BenchmarkWorkloadSign's CSR, so the two compare the CA's signing of
// a workload SVID with a renewal under a new key. 64 callers.
func BenchmarkRenewCSR(b *testing.B) {
	ib := newIssuanceBench(b)
	var bodies [2][]byte
	for i := range bodies {
		var err error
		if bodies[i], err = json.Marshal(map[string]string{"csr": csrFor(b, mustKey(b, ca.ECP256), nil)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetParallelism(callersPerProc())
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		leaf := ib.issue(b, "spiffe://example.org/agent/renew")
		for i := 0; pb.Next(); i++ {
			leaf = ib.post(b, "/v1/renew", bodies[i%2], leaf)
		}
	})
}
