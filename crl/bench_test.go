package crl_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// BenchmarkCRLBuild100k builds the CRL of an issuer with 100,000 revoked,
// unexpired certificates in a real bolt store (target: ≤ 500 ms a build).
// The records are synthetic (Build reads only the revocation index), and
// are written from many goroutines so the store groups the commits.
func BenchmarkCRLBuild100k(b *testing.B) {
	const workers = 512
	n := 100_000
	if smokeRun() {
		n = 1_000 // make test runs each benchmark once to see it work
	}
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(b.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	iss := testIssuer(b, "agentca-crl-bench")
	now := time.Now().UTC().Truncate(time.Second)

	setup := time.Now()
	serials := make([]string, n)
	for i := range serials {
		sn, err := ca.NewSerial(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		serials[i] = hex.EncodeToString(sn.Bytes())
	}
	parallel := func(fn func(i int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					if err := fn(i); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	parallel(func(i int) error {
		return st.Issue(ctx, &store.Issuance{Now: now, Certificate: store.Certificate{
			Serial: serials[i], SPIFFEID: "spiffe://example.org/bench", Provisioner: "bench", IssuerSKI: iss.SKI,
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), DER: []byte{0x30, 0x00},
		}})
	})
	parallel(func(i int) error {
		_, err := st.Revoke(ctx, serials[i], i%6, now.Add(-time.Duration(i)*time.Millisecond))
		return err
	})
	b.Logf("setup: %d certificates issued and revoked in %s", n, time.Since(setup).Round(time.Millisecond))

	p, err := crl.New(crl.Options{Issuer: iss, Source: st})
	if err != nil {
		b.Fatal(err)
	}
	var last *crl.CRL
	b.ReportAllocs()
	for b.Loop() {
		if last, err = p.Build(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/build")
	b.ReportMetric(float64(len(last.DER))/1e6, "MB/CRL")
	if last.Entries != n {
		b.Fatalf("%d entries, want %d", last.Entries, n)
	}
}

// smokeRun tells a run of every benchmark once (-benchtime=1x, as make
// test does to keep benchmarks from rotting) from a measurement: the
// figures of a single iteration mean nothing, so the setup is kept small.
func smokeRun() bool {
	f := flag.Lookup("test.benchtime")
	return f != nil && f.Value.String() == "1x"
}
