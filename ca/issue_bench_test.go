package ca_test

// Benchmarks of the issuance core: what POST /v1/sign and /v1/renew cost
// without HTTP and TLS. Every identifier here starts with "bench" or
// "Benchmark" (other ca_test files are written by others).
//
//	go test -run '^$' -bench . -benchmem ./ca/
//	go test -run '^$' -bench 'Issue/durable' -cpuprofile cpu.out ./ca/

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// benchPoolSize is how many leaf keys (and CSRs) the benchmarks cycle
// through, so that key generation stays out of the measurement.
const benchPoolSize = 64

// benchWriters is the number of concurrent callers in the parallel
// benchmarks: b.SetParallelism(benchWriters/GOMAXPROCS) goroutines, like
// 64 concurrent HTTP requests in the daemon whatever the core count.
const benchWriters = 64

const benchTrustDomain = "example.org"

type benchLeaf struct {
	key crypto.Signer
	csr []byte // PEM CERTIFICATE REQUEST
}

func benchLeaves(b *testing.B) []benchLeaf {
	b.Helper()
	out := make([]benchLeaf, benchPoolSize)
	for i := range out {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = benchLeaf{key: k, csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}
	}
	return out
}

// benchNopRecorder records nothing: it isolates the signing cost.
type benchNopRecorder struct{}

func (benchNopRecorder) Issue(context.Context, *store.Issuance) error { return nil }

// benchIssuer makes a P-256 root and issuing CA, as `agentca init` does.
func benchIssuer(b *testing.B) *ca.Issuer {
	b.Helper()
	h, err := ca.NewHierarchy("bench", ca.ECP256, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		b.Fatal(err)
	}
	return iss
}

// benchStore opens a real bbolt store (fsync on every commit) in a fresh
// temporary directory.
func benchStore(b *testing.B) *bolt.Store {
	b.Helper()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func benchAuthority(b *testing.B, rec ca.Recorder) *ca.Authority {
	b.Helper()
	a, err := ca.New(ca.Options{TrustDomain: benchTrustDomain, Issuer: benchIssuer(b), Recorder: rec})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func benchRequest(pub crypto.PublicKey, i int64) *ca.Request {
	return &ca.Request{
		PublicKey:   pub,
		SPIFFEID:    fmt.Sprintf("spiffe://%s/agent/bench-%d", benchTrustDomain, i%1024),
		Provisioner: "join",
	}
}

// benchRate reports certificates per second of wall time.
func benchRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "certs/s")
	}
}

// BenchmarkParseCSR: PEM decode, DER parse, key check and the P-256
// signature verification (proof of possession) of one CSR.
func BenchmarkParseCSR(b *testing.B) {
	leaves := benchLeaves(b)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := ca.ParseCSR(leaves[i%len(leaves)].csr); err != nil {
				b.Fatal(err)
			}
			i++
		}
		benchRate(b)
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if _, err := ca.ParseCSR(leaves[i%int64(len(leaves))].csr); err != nil {
					b.Error(err)
					return
				}
			}
		})
		benchRate(b)
	})
}

// BenchmarkIssue: Authority.Issue (policy, template, P-256 signature) and
// the recording. "sign-only" records nothing; "durable" records into a real
// bbolt file with fsync, through its group-commit goroutine.
func BenchmarkIssue(b *testing.B) {
	leaves := benchLeaves(b)
	for _, mode := range []string{"sign-only", "durable"} {
		newAuthority := func(b *testing.B) *ca.Authority {
			if mode == "durable" {
				return benchAuthority(b, benchStore(b))
			}
			return benchAuthority(b, benchNopRecorder{})
		}
		b.Run(mode+"/serial", func(b *testing.B) {
			a := newAuthority(b)
			ctx := context.Background()
			b.ReportAllocs()
			var i int64
			for b.Loop() {
				if _, err := a.Issue(ctx, benchRequest(leaves[i%int64(len(leaves))].key.Public(), i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			benchRate(b)
		})
		b.Run(fmt.Sprintf("%s/parallel-%d", mode, benchWriters), func(b *testing.B) {
			a := newAuthority(b)
			ctx := context.Background()
			b.ReportAllocs()
			benchSetParallelism(b)
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if _, err := a.Issue(ctx, benchRequest(leaves[i%int64(len(leaves))].key.Public(), i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			benchRate(b)
		})
	}
}

// BenchmarkSignCore is the whole /v1/sign core minus HTTP/TLS/JSON: parse
// and verify the CSR, check the join token (a store read, as the
// provisioner's Attest does), issue, and consume the token in the same
// durable transaction that records the certificate.
func BenchmarkSignCore(b *testing.B) {
	leaves := benchLeaves(b)
	st := benchStore(b)
	a := benchAuthority(b, st)
	prov, err := jointoken.New("join", st, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Enough single-use tokens for every iteration of every round; the
	// store refuses a reused one, so one per request is required.
	var tokens []string
	benchTokens := func(b *testing.B, n int) {
		b.Helper()
		for len(tokens) < n {
			chunk := min(n-len(tokens), 10_000)
			created, err := prov.Create(ctx, "spiffe://"+benchTrustDomain+"/agent/bench", time.Hour, chunk)
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range created {
				tokens = append(tokens, c.Token)
			}
		}
	}
	var used atomic.Int64
	one := func(i int64) error {
		csr, err := ca.ParseCSR(leaves[i%int64(len(leaves))].csr)
		if err != nil {
			return err
		}
		id, err := prov.Attest(ctx, tokens[i])
		if err != nil {
			return err
		}
		_, err = a.Issue(ctx, &ca.Request{PublicKey: csr.PublicKey, SPIFFEID: id.SPIFFEID, Provisioner: "join", JoinToken: id.JoinToken})
		return err
	}
	b.Run("serial", func(b *testing.B) {
		benchTokens(b, int(used.Load())+b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := one(used.Add(1) - 1); err != nil {
				b.Fatal(err)
			}
		}
		benchRate(b)
	})
	b.Run(fmt.Sprintf("parallel-%d", benchWriters), func(b *testing.B) {
		benchTokens(b, int(used.Load())+b.N)
		b.ReportAllocs()
		benchSetParallelism(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := one(used.Add(1) - 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
		benchRate(b)
	})
}

// benchSetParallelism runs benchWriters goroutines in b.RunParallel.
func benchSetParallelism(b *testing.B) {
	b.SetParallelism(max(1, benchWriters/runtime.GOMAXPROCS(0)))
}
