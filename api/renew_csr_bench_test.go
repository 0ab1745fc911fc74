package api_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/workloads"
)

// BenchmarkWorkloadSignVsRenew compares the CA's cost of a workload SVID
// with a renewal under a fresh key, on the same bench (bbolt store, the
// HTTPS handler without TLS), 64 callers each:
//
//   - renew: POST /v1/renew with an empty body (the same key), as
//     BenchmarkRenew;
//   - renew-csr: POST /v1/renew with a CSR (two keys made beforehand, used
//     in turn, so each renewal changes the key as a rotation does): the
//     CA checks the CSR's signature as it does a workload's;
//   - workload: POST /v1/workload/sign, as BenchmarkWorkloadSign/provisioner.
//
// Besides time/op it reports cpu-µs/op, the process's CPU time (user and
// system: handler, bbolt commits, GC) per request, which other work on a
// shared machine does not inflate as it does the wall clock.
func BenchmarkWorkloadSignVsRenew(b *testing.B) {
	b.Run("renew", func(b *testing.B) {
		ib := newIssuanceBench(b)
		runIssuance(b, func(leaf **x509.Certificate, _ int) { *leaf = ib.post(b, "/v1/renew", nil, *leaf) }, ib)
	})
	b.Run("renew-csr", func(b *testing.B) {
		ib := newIssuanceBench(b)
		var bodies [2][]byte
		for i := range bodies {
			var err error
			if bodies[i], err = json.Marshal(map[string]string{"csr": csrFor(b, mustKey(b, ca.ECP256), nil)}); err != nil {
				b.Fatal(err)
			}
		}
		runIssuance(b, func(leaf **x509.Certificate, i int) { *leaf = ib.post(b, "/v1/renew", bodies[i%2], *leaf) }, ib)
	})
	b.Run("workload", func(b *testing.B) {
		ib := newIssuanceBench(b)
		def := workloads.Definition{ID: "bench", SPIFFEID: "spiffe://example.org/w/{{unix:uid}}", Selectors: []string{"unix:gid:100"},
			NodeProvisioners: []string{"k8s"}}
		if _, err := ib.st.UpdateWorkloads(context.Background(), func(s *workloads.Set) error {
			s.Definitions = append(s.Definitions, def)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		body, err := json.Marshal(map[string]any{"spiffe_id": "spiffe://example.org/w/1000",
			"selectors": []string{"unix:uid:1000", "unix:gid:100", "unix:user:svc"}, "csr": csrFor(b, mustKey(b, ca.ECP256), nil)})
		if err != nil {
			b.Fatal(err)
		}
		runIssuance(b, func(_ **x509.Certificate, _ int) {
			if svid := ib.post(b, "/v1/workload/sign", body, ib.node); !strings.HasSuffix(svid.URIs[0].String(), "/w/1000") {
				b.Fatalf("SVID for %s", svid.URIs[0])
			}
		}, ib)
	})
}

// runIssuance runs op from 64 callers, each with its own certificate to
// renew (issued before the timer starts), and reports the process's CPU
// time per op.
func runIssuance(b *testing.B, op func(leaf **x509.Certificate, i int), ib *issuanceBench) {
	callers := callersPerProc() * runtime.GOMAXPROCS(0)
	leaves := make(chan *x509.Certificate, callers)
	for range callers {
		leaves <- ib.issue(b, "spiffe://example.org/agent/renew")
	}
	b.ReportAllocs()
	b.SetParallelism(callersPerProc())
	cpu0 := processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		leaf := <-leaves
		for i := 0; pb.Next(); i++ {
			op(&leaf, i)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
