package translog

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
)

// benchSize is 1,000,000 leaves, or 4,096 when make test runs every
// benchmark once (-benchtime=1x) only to see that it still works.
func benchSize() int {
	if f := flag.Lookup("test.benchtime"); f != nil && f.Value.String() == "1x" {
		return 4096
	}
	return 1_000_000
}

var (
	benchOnce  sync.Once
	benchState State
	benchNodes *MemoryNodes
)

// benchTree is a log of 1,000,000 leaves with every node in memory, built
// once per run.
func benchTree(b *testing.B) (State, *MemoryNodes) {
	benchOnce.Do(func() {
		leaves := testLeafHashes(b, benchSize())
		benchState, benchNodes = buildTree(b, leaves)
	})
	return benchState, benchNodes
}

// reportLatency adds p50 and p99 of the measured operations.
func reportLatency(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkInclusionProof: an audit path for a random leaf in the tree of
// 1,000,000 entries, nodes read from memory (the target: p99 ≤ 1 ms).
func BenchmarkInclusionProof(b *testing.B) {
	st, mem := benchTree(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for b.Loop() {
		i := rng.Uint64N(st.Size())
		start := time.Now()
		if _, err := InclusionProof(ctx, mem, i, st.Size()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkConsistencyProof: between a random earlier size and 1,000,000.
func BenchmarkConsistencyProof(b *testing.B) {
	st, mem := benchTree(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var lat []time.Duration
	for b.Loop() {
		size1 := 1 + rng.Uint64N(st.Size())
		start := time.Now()
		if _, err := ConsistencyProof(ctx, mem, size1, st.Size()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkRootAt: a past root from stored nodes.
func BenchmarkRootAt(b *testing.B) {
	st, mem := benchTree(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	for b.Loop() {
		if _, err := RootAt(ctx, mem, 1+rng.Uint64N(st.Size())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend: appending one transaction's batch of leaves to a log of
// 1,000,000, decoding and encoding the State as the store does, and
// handing each fixed node to a writer (which here only counts them).
func BenchmarkAppend(b *testing.B) {
	st, _ := benchTree(b)
	stored, _ := st.MarshalBinary()
	leaves := testLeafHashes(b, 1024)
	for _, batch := range []int{1, 16, 256, 1024} {
		b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) {
			nodes := 0
			count := func(compact.NodeID, []byte) error { nodes++; return nil }
			for b.Loop() {
				var s State
				if err := s.UnmarshalBinary(stored); err != nil {
					b.Fatal(err)
				}
				next, err := s.Append(leaves[:batch], count)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := next.MarshalBinary(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "leaves/s")
			b.ReportMetric(float64(nodes)/float64(b.N*batch), "nodes/leaf")
		})
	}
}

// BenchmarkNewLeaf: leaf encoding and hashing of a 600-byte certificate.
func BenchmarkNewLeaf(b *testing.B) {
	der := make([]byte, 600)
	for b.Loop() {
		if _, err := NewLeaf(der, 1767225600000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign: one tree head with ECDSA P-256, including the check.
func BenchmarkSign(b *testing.B) {
	st, _ := benchTree(b)
	s, err := NewSigner(newP256(b))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Sign(st, 1767225600000); err != nil {
			b.Fatal(err)
		}
	}
}
