package ocsp_test

import (
	"context"
	"crypto/x509"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkRespondCached measures answers from the cache (the common case:
// relying services asking about live certificates), in parallel.
func BenchmarkRespondCached(b *testing.B) {
	for _, n := range []int{1, 256} {
		b.Run(map[int]string{1: "one-serial", 256: "256-serials"}[n], func(b *testing.B) {
			e := newEnv(b, envOptions{})
			reqs := make([][]byte, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { reqs[i] = e.request(e.issue(0), 0) }) // concurrent, so the store groups the commits
			}
			wg.Wait()
			ctx := context.Background()
			for _, r := range reqs { // warm the cache
				if resp, _, err := e.responder.Respond(ctx, r); err != nil || resp == nil {
					b.Fatal(err)
				}
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1))
				for pb.Next() {
					resp, _, err := e.responder.Respond(ctx, reqs[i%n])
					if err != nil || resp == nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
		})
	}
}

// BenchmarkRespondUnknown measures the uncached path: every request for a
// serial the CA never issued is a store read and a fresh signature.
func BenchmarkRespondUnknown(b *testing.B) {
	e := newEnv(b, envOptions{})
	req := e.request(&x509.Certificate{SerialNumber: big.NewInt(0x7fffffff)}, 0)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if resp, _, err := e.responder.Respond(ctx, req); err != nil || resp == nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "responses/s")
}
