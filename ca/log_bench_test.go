package ca_test

// What the issuance log costs an issuance: Authority.Issue (policy,
// signing, the bbolt transaction with its fsync) with and without the log
// leaf, and with the whole log path of a SignResponse (the tree head that
// includes the certificate, signed once per batch, and the inclusion
// proof). Identifiers start with logBench or BenchmarkLog (other ca_test
// files are written by others).
//
//	go test -run '^$' -bench BenchmarkLog -benchmem ./ca/

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
)

// logBenchNoLog records issuances without their log leaf: the CA as it
// was before the log.
type logBenchNoLog struct{ ca.Recorder }

func (r logBenchNoLog) Issue(ctx context.Context, iss *store.Issuance) error {
	iss.LogLeaf = nil
	return r.Recorder.Issue(ctx, iss)
}

// BenchmarkLogAuthorityIssue: durable issuances per second with 64
// concurrent callers. log=off records without the leaf; log=on appends
// it in the same transaction; log=on+receipt also waits for a signed tree
// head that includes the certificate and builds its inclusion proof, as
// every /v1/sign answer does.
func BenchmarkLogAuthorityIssue(b *testing.B) {
	for _, mode := range []string{"log=off", "log=on", "log=on+receipt"} {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			appended := make(chan struct{}, 1)
			st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{OnLogAppend: func() {
				select {
				case appended <- struct{}{}:
				default:
				}
			}})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var rec ca.Recorder = st
			if mode == "log=off" {
				rec = logBenchNoLog{st}
			}
			h, err := ca.NewHierarchy("bench", ca.ECP256, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
			if err != nil {
				b.Fatal(err)
			}
			a, err := ca.New(ca.Options{TrustDomain: "example.org", Issuer: iss, Recorder: rec})
			if err != nil {
				b.Fatal(err)
			}
			var tlog *logsign.Signer
			if mode == "log=on+receipt" {
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				signer, err := translog.NewSigner(key)
				if err != nil {
					b.Fatal(err)
				}
				if tlog, err = logsign.New(ctx, logsign.Options{Store: st, Key: signer, Appended: appended}); err != nil {
					b.Fatal(err)
				}
				done := make(chan struct{})
				go func() { defer close(done); tlog.Run(ctx) }()
				defer func() { cancel(); <-done }()
			}
			keys := make([]crypto.PublicKey, 64)
			for i := range keys {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				keys[i] = k.Public()
			}
			var n atomic.Int64
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					out, err := a.Issue(ctx, &ca.Request{PublicKey: keys[i%64], Provisioner: "join",
						SPIFFEID: fmt.Sprintf("spiffe://example.org/agent/bench-%d", i%1024)})
					if err != nil {
						b.Error(err)
						return
					}
					if tlog != nil {
						if _, err := tlog.Receipt(ctx, out.LogIndex, out.LogLeaf); err != nil {
							b.Error(err)
							return
						}
					}
				}
			})
			if s := b.Elapsed().Seconds(); s > 0 {
				b.ReportMetric(float64(b.N)/s, "certs/s")
			}
		})
	}
}
