package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// TestCapClientKey: a client certificate with an RSA key over 4096 bits
// is refused before the handshake signature made with it is checked.
func TestCapClientKey(t *testing.T) {
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(pub any) []byte {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "c"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{Subject: pkix.Name{CommonName: "i"}}, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	n := new(big.Int).Lsh(big.NewInt(1), 8191)
	n.SetBit(n, 0, 1)
	if err := capClientKey([][]byte{cert(&rsa.PublicKey{N: n, E: 65537})}, nil); err == nil {
		t.Fatal("an RSA-8192 client key was let in")
	}
	if err := capClientKey([][]byte{cert(signer.Public())}, nil); err != nil {
		t.Fatalf("a P-256 client key: %v", err)
	}
	if err := capClientKey(nil, nil); err != nil {
		t.Fatalf("no client certificate: %v", err)
	}
}
