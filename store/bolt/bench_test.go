package bolt_test

// Benchmarks of the bbolt store's write path. Every identifier here starts
// with "bench" or "Benchmark" (other bolt_test files are written by
// others).
//
//	go test -run '^$' -bench . -benchmem ./store/bolt/

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
)

// benchDER stands in for a leaf certificate: about the size of a P-256
// X.509-SVID with AIA and CRL distribution points.
var benchDER = func() []byte {
	b := make([]byte, 700)
	_, _ = rand.Read(b)
	return b
}()

func benchOpen(b *testing.B) *bolt.Store {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// benchVariant is what one Issue records besides the certificate.
type benchVariant struct {
	name  string
	token bool // consume a join token, as /v1/sign does
	log   bool // append the issuance-log leaf, as the CA always does
}

var benchVariants = []benchVariant{
	{name: "cert"},
	{name: "cert+log", log: true},
	{name: "cert+log+token", log: true, token: true},
}

// benchIssuance is one certificate record; with a token hash it also
// consumes that join token, and with log its issuance-log leaf is
// appended in the same transaction.
func benchIssuance(b *testing.B, token []byte, log bool, now time.Time) *store.Issuance {
	// Random 127-bit serials, as ca.NewSerial makes them: the records
	// land on random pages of the B+tree, not at its end.
	var sb [16]byte
	_, _ = rand.Read(sb[:])
	sb[0] = sb[0]&0x7f | 0x40
	// A distinct DER per record (the serial in its first bytes), so that
	// log leaves differ.
	der := append([]byte(nil), benchDER...)
	copy(der, sb[:])
	iss := &store.Issuance{
		Certificate: store.Certificate{
			Serial:      hex.EncodeToString(sb[:]),
			SPIFFEID:    "spiffe://example.org/agent/bench",
			Provisioner: "join",
			IssuerSKI:   "7a3b794e1f8b27be4c548614e0e36fabd9747aaf",
			NotBefore:   now.Add(-time.Minute),
			NotAfter:    now.Add(5 * time.Minute),
			DER:         der,
		},
		JoinToken: token,
		Now:       now,
	}
	if log {
		leaf, err := translog.NewLeaf(der, uint64(now.UnixMilli()))
		if err != nil {
			b.Fatal(err)
		}
		iss.LogLeaf = leaf
	}
	return iss
}

// benchTokenHashes stores n join tokens (in chunks of 10,000, as the
// admin API does) and returns their hashes.
func benchTokenHashes(b *testing.B, st *bolt.Store, n int, now time.Time) [][]byte {
	b.Helper()
	out := make([][]byte, 0, n)
	for len(out) < n {
		chunk := min(n-len(out), 10_000)
		toks := make([]store.JoinToken, chunk)
		for j := range toks {
			var raw [32]byte
			_, _ = rand.Read(raw[:])
			h := sha256.Sum256(raw[:])
			toks[j] = store.JoinToken{Hash: h[:], SPIFFEID: "spiffe://example.org/agent/bench", Provisioner: "join",
				CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
			out = append(out, h[:])
		}
		if err := st.CreateJoinTokens(context.Background(), toks); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func benchRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "issuances/s")
	}
}

// BenchmarkIssueSerial is one writer at a time: every Issue waits for its
// own transaction and fsync, so ns/op is the durable write latency.
func BenchmarkIssueSerial(b *testing.B) {
	for _, v := range benchVariants {
		b.Run(v.name, func(b *testing.B) {
			st := benchOpen(b)
			now := time.Now()
			var toks [][]byte
			if v.token {
				toks = benchTokenHashes(b, st, b.N, now)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var tok []byte
				if v.token {
					tok = toks[i]
				}
				if err := st.Issue(ctx, benchIssuance(b, tok, v.log, now)); err != nil {
					b.Fatal(err)
				}
			}
			benchRate(b)
		})
	}
}

// BenchmarkIssueParallel is many concurrent writers (16, 64, 256): the
// committer groups what is waiting into one transaction and one fsync,
// so throughput should grow with the writers until the transaction's own
// CPU cost dominates.
func BenchmarkIssueParallel(b *testing.B) {
	for _, writers := range []int{16, 64, 256} {
		for _, v := range benchVariants {
			b.Run(fmt.Sprintf("writers-%d/%s", writers, v.name), func(b *testing.B) {
				st := benchOpen(b)
				now := time.Now()
				var toks [][]byte
				if v.token {
					toks = benchTokenHashes(b, st, b.N, now)
				}
				ctx := context.Background()
				var n atomic.Int64
				b.ReportAllocs()
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := n.Add(1) - 1
						var tok []byte
						if v.token {
							tok = toks[i]
						}
						if err := st.Issue(ctx, benchIssuance(b, tok, v.log, now)); err != nil {
							b.Error(err)
							return
						}
					}
				})
				benchRate(b)
			})
		}
	}
}
