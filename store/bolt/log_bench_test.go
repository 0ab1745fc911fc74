package bolt

// Benchmarks of the issuance log in the bbolt store: issuance throughput
// with and without the log (the append in the issuance transaction), and
// proof generation from a store of 1,000,000 entries. Identifiers start
// with logBench or BenchmarkLog (other test files here are written by
// others).
//
//	go test -run '^$' -bench BenchmarkLog -benchmem ./store/bolt/

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	mrand "math/rand/v2"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	bbolt "go.etcd.io/bbolt"
)

// logBenchDER stands in for a leaf certificate: about the size of an
// X.509-SVID with AIA and CRL distribution points. Each issuance makes it
// unique by its serial in the first bytes.
var logBenchDER = func() []byte {
	b := make([]byte, 700)
	_, _ = rand.Read(b)
	return b
}()

// logBenchIssuance is one certificate record that consumes the join token
// whose hash is token, as /v1/sign does, with its log leaf when withLog is
// set (built here, as ca.Authority does for each issuance).
func logBenchIssuance(b *testing.B, withLog bool, token []byte, now time.Time) *store.Issuance {
	var sb [16]byte
	_, _ = rand.Read(sb[:])
	sb[0] = sb[0]&0x7f | 0x40
	der := append([]byte(nil), logBenchDER...)
	copy(der[16:], sb[:])
	iss := &store.Issuance{
		Certificate: store.Certificate{
			Serial: hex.EncodeToString(sb[:]), SPIFFEID: "spiffe://example.org/agent/bench", Provisioner: "join",
			IssuerSKI: "7a3b794e1f8b27be4c548614e0e36fabd9747aaf", NotBefore: now.Add(-time.Minute), NotAfter: now.Add(5 * time.Minute), DER: der,
		},
		JoinToken: token,
		Now:       now,
	}
	if withLog {
		l, err := translog.NewLeaf(der, uint64(now.UnixMilli()))
		if err != nil {
			b.Fatal(err)
		}
		iss.LogLeaf = l
	}
	return iss
}

// logBenchTokens stores n join tokens and returns their hashes.
func logBenchTokens(b *testing.B, s *Store, n int, now time.Time) [][]byte {
	b.Helper()
	hashes := make([][]byte, n)
	for start := 0; start < n; start += 10_000 {
		toks := make([]store.JoinToken, min(10_000, n-start))
		for i := range toks {
			h := make([]byte, 32)
			_, _ = rand.Read(h)
			hashes[start+i] = h
			toks[i] = store.JoinToken{Hash: h, SPIFFEID: "spiffe://example.org/agent/bench", Provisioner: "join", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		}
		if err := s.CreateJoinTokens(context.Background(), toks); err != nil {
			b.Fatal(err)
		}
	}
	return hashes
}

// BenchmarkLogIssue: durable issuances per second through Issue (group
// commit, one fsync per batch), each consuming a join token as /v1/sign
// does, with and without appending to the log.
// "parallel" keeps 64 requests per CPU in flight, as a loaded daemon does;
// "serial" is one client waiting for each answer.
func BenchmarkLogIssue(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		for _, withLog := range []bool{false, true} {
			name := mode + "/log=off"
			if withLog {
				name = mode + "/log=on"
			}
			b.Run(name, func(b *testing.B) {
				s, err := Open(filepath.Join(b.TempDir(), "agentca.db"), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				now := time.Now()
				tokens := logBenchTokens(b, s, b.N, now)
				var next atomic.Int64
				b.ResetTimer()
				if mode == "serial" {
					for i := range b.N {
						if err := s.Issue(ctx, logBenchIssuance(b, withLog, tokens[i], now)); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(64)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := s.Issue(ctx, logBenchIssuance(b, withLog, tokens[next.Add(1)-1], now)); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
				if withLog {
					st, err := s.LogState(ctx)
					if err != nil || st.Size() != uint64(b.N) {
						b.Fatalf("log size %d after %d issuances: %v", st.Size(), b.N, err)
					}
				}
			})
		}
	}
}

// logBenchSize is the size of the log the proof benchmarks read.
const logBenchSize = 1_000_000

// logBenchBuild fills a new store with logBenchSize entries through the
// append path Issue uses (appendLeaves), 50,000 leaves per transaction.
// The certificates are 48-byte stand-ins: proofs read only nodes.
func logBenchBuild(b *testing.B) *Store {
	b.Helper()
	start := time.Now()
	s, err := Open(filepath.Join(b.TempDir(), "agentca.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	const batch = 50_000
	ts := uint64(time.Now().UnixMilli())
	der := make([]byte, 48)
	_, _ = rand.Read(der)
	for done := 0; done < logBenchSize; done += batch {
		leaves := make([]*translog.Leaf, batch)
		for i := range leaves {
			d := append([]byte(nil), der...)
			binary.BigEndian.PutUint64(d, uint64(done+i))
			if leaves[i], err = translog.NewLeaf(d, ts); err != nil {
				b.Fatal(err)
			}
		}
		err := s.db.Update(func(tx *bbolt.Tx) error { return appendLeaves(tx, leaves) })
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { s.Close() })
	b.Logf("built a log of %d entries in %s", logBenchSize, time.Since(start).Round(time.Millisecond))
	return s
}

// logBenchLatency reports p50 and p99 of the measured operations.
func logBenchLatency(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkLogProof1M: proofs from the bbolt store of 1,000,000 entries
// (the issue's target: p99 ≤ 1 ms). "inclusion" is an audit path for a
// random entry; "by-hash" is get-proof-by-hash's work (the index lookup,
// then the path); "consistency" is between a random size and the full
// tree.
func BenchmarkLogProof1M(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 1,000,000-entry log (about a minute); make bench runs -short and measures proofs at that size through the daemon (agentca-bench big-store)")
	}
	s := logBenchBuild(b)
	ctx := context.Background()
	st, err := s.LogState(ctx)
	if err != nil || st.Size() != logBenchSize {
		b.Fatalf("log size %d, %v", st.Size(), err)
	}
	root := st.Root()
	inputs, err := s.LogEntries(ctx, 0, 4096)
	if err != nil {
		b.Fatal(err)
	}
	hashes := make([][]byte, len(inputs))
	for i, in := range inputs {
		l, err := translog.ParseLeaf(in)
		if err != nil {
			b.Fatal(err)
		}
		hashes[i] = l.Hash
	}
	b.Run("inclusion", func(b *testing.B) {
		rng := mrand.New(mrand.NewPCG(1, 2))
		var lat []time.Duration
		for b.Loop() {
			i := rng.Uint64N(logBenchSize)
			t0 := time.Now()
			if _, err := translog.InclusionProof(ctx, s, i, logBenchSize); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		logBenchLatency(b, lat)
	})
	b.Run("by-hash", func(b *testing.B) {
		rng := mrand.New(mrand.NewPCG(3, 4))
		var lat []time.Duration
		for b.Loop() {
			h := hashes[rng.IntN(len(hashes))]
			t0 := time.Now()
			i, err := s.LogIndex(ctx, h)
			if err != nil {
				b.Fatal(err)
			}
			p, err := translog.InclusionProof(ctx, s, i, logBenchSize)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			if err := translog.VerifyInclusion(h, i, logBenchSize, p, root); err != nil {
				b.Fatal(err)
			}
		}
		logBenchLatency(b, lat)
	})
	b.Run("consistency", func(b *testing.B) {
		rng := mrand.New(mrand.NewPCG(5, 6))
		var lat []time.Duration
		for b.Loop() {
			size1 := 1 + rng.Uint64N(logBenchSize-1)
			t0 := time.Now()
			if _, err := translog.ConsistencyProof(ctx, s, size1, logBenchSize); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		logBenchLatency(b, lat)
	})
}
