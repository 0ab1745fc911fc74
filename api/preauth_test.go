package api_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
)

// selfLeaf is a client-auth leaf the CA never issued, with the given
// serial, signed by a key of its own and naming issuer as its issuer.
func selfLeaf(t *testing.T, serial *big.Int, issuer string, signer crypto.Signer) *tls.Certificate {
	t.Helper()
	key := mustKey(t, ca.ECP256)
	if signer == nil {
		signer = mustKey(t, ca.ECP256)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"}, NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	parent := &x509.Certificate{Subject: pkix.Name{CommonName: issuer}, PublicKey: signer.Public()}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// rsa4096 is the RSA-4096 test key of package ca (too slow to generate
// on every run).
func rsa4096(t *testing.T) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "ca", "testdata", "rsa-4096.key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

// craftedIntermediates are n CA certificates named "crafted", each with
// a 4096-bit RSA modulus and a large public exponent (not real keys: only
// the cost of a signature check matters), candidates Go's chain builder
// tries one by one for a leaf with an RSA-4096 signature naming
// "crafted" as its issuer.
func craftedIntermediates(t *testing.T, n int) [][]byte {
	t.Helper()
	signer := mustKey(t, ca.ECP256)
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 4096/8)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		for j := range 8 {
			b[j] = 0xff // above any RSA-4096 signature
		}
		nBig := new(big.Int).SetBytes(b)
		nBig.SetBit(nBig, 0, 1)
		pub := &rsa.PublicKey{N: nBig, E: 1<<31 - 1}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "crafted"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, &x509.Certificate{Subject: pkix.Name{CommonName: "someone"}}, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = der
	}
	return out
}

// TestUnknownCertificateCostsOneRead: a leaf the store does not know is
// refused before anything is verified, so a chain of 110 RSA-8192
// "intermediates" costs no more than a bare unknown leaf; the answer is
// the same 401 for both.
func TestUnknownCertificateCostsOneRead(t *testing.T) {
	e := newEnv(t, envOptions{})
	plain := selfLeaf(t, big.NewInt(0xabcdef), "crafted", nil)
	crafted := selfLeaf(t, big.NewInt(0xabcdee), "crafted", rsa4096(t))
	crafted.Certificate = append(crafted.Certificate, craftedIntermediates(t, 110)...)
	const n = 10
	cost := func(cert *tls.Certificate) time.Duration {
		c := e.client(cert)
		e.postJSON(c, "/v1/renew", []byte{}) // the handshake
		start := time.Now()
		for range n {
			if r := e.postJSON(c, "/v1/renew", []byte{}); r.status != http.StatusUnauthorized {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		}
		return time.Since(start)
	}
	c, p := cost(crafted), cost(plain)
	// Verifying the chain was 100 such signature checks a request, tens
	// of milliseconds; a store read is well under one.
	if c > 4*p+time.Duration(n)*3*time.Millisecond {
		t.Fatalf("%d requests with the crafted chain took %s, with a plain unknown leaf %s", n, c, p)
	}
	t.Logf("crafted %s, plain %s", c, p)
}

// TestClientSerialOutOfRange: serial 0 or over 160 bits is 401
// unknown_certificate, never a 500.
func TestClientSerialOutOfRange(t *testing.T) {
	e := newEnv(t, envOptions{})
	big161 := new(big.Int).Lsh(big.NewInt(1), 160)
	for name, serial := range map[string]*big.Int{"zero": big.NewInt(0), "161 bits": big161} {
		t.Run(name, func(t *testing.T) {
			r := e.postJSON(e.client(selfLeaf(t, serial, "x", nil)), "/v1/renew", []byte{})
			apiError(t, r, http.StatusUnauthorized, api.CodeUnknownCertificate)
		})
	}
	if logs := e.logs.String(); strings.Contains(logs, `"level":"ERROR"`) {
		t.Fatalf("an ERROR line:\n%s", logs)
	}
}
