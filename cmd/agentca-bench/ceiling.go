package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ceiling is the machine's rate for the cryptography every issuance needs
// at the least: sign one P-256 leaf with a P-256 issuer and check one
// CSR's P-256 signature. No HTTP, TLS, JSON, store or fsync.
type ceiling struct {
	rate       float64 // per second, all goroutines together
	goroutines int
	dur        time.Duration
}

func measureCeiling(ctx context.Context, dur time.Duration) (ceiling, error) {
	issKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return ceiling{}, err
	}
	now := time.Now()
	issTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bench issuing CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte{1, 2, 3, 4},
	}
	issDER, err := x509.CreateCertificate(rand.Reader, issTmpl, issTmpl, issKey.Public(), issKey)
	if err != nil {
		return ceiling{}, err
	}
	iss, err := x509.ParseCertificate(issDER)
	if err != nil {
		return ceiling{}, err
	}
	// A small pool of leaf keys and their parsed CSRs.
	const pool = 16
	csrs := make([]*x509.CertificateRequest, pool)
	for i := range csrs {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return ceiling{}, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			return ceiling{}, err
		}
		if csrs[i], err = x509.ParseCertificateRequest(der); err != nil {
			return ceiling{}, err
		}
	}
	spiffe, _ := url.Parse("spiffe://" + trustDomain + "/agent/ceiling")

	n := runtime.GOMAXPROCS(0)
	var total atomic.Int64
	errs := make([]error, n)
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			serial := make([]byte, 16)
			for i := g; ctx.Err() == nil && time.Now().Before(deadline); i++ {
				csr := csrs[i%pool]
				if err := csr.CheckSignature(); err != nil {
					errs[g] = err
					return
				}
				_, _ = rand.Read(serial)
				serial[0] = serial[0]&0x7f | 0x40
				ski := sha1.Sum(csr.RawSubjectPublicKeyInfo)
				// The X.509-SVID leaf profile agentca issues.
				tmpl := &x509.Certificate{
					SerialNumber:          new(big.Int).SetBytes(serial),
					NotBefore:             now.Add(-time.Minute),
					NotAfter:              now.Add(5 * time.Minute),
					SubjectKeyId:          ski[:],
					KeyUsage:              x509.KeyUsageDigitalSignature,
					ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
					BasicConstraintsValid: true,
					URIs:                  []*url.URL{spiffe},
				}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, iss, csr.PublicKey, issKey); err != nil {
					errs[g] = err
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return ceiling{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return ceiling{}, err
	}
	if total.Load() == 0 {
		return ceiling{}, fmt.Errorf("no operation completed in %s", dur)
	}
	return ceiling{rate: float64(total.Load()) / el.Seconds(), goroutines: n, dur: el}, nil
}
