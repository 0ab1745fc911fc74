package ca_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/agentca/agentca/ca"
)

func TestParseCSR(t *testing.T) {
	p256 := mustKey(t, ca.ECP256)
	valid := csrPEM(t, p256, nil)
	validDER := csrDER(t, p256, nil)

	// A CSR whose signed content is changed after signing: it still
	// parses, but the signature no longer verifies.
	tamperedDER := csrDER(t, p256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "aaaaaaaa"}})
	i := bytes.Index(tamperedDER, []byte("aaaaaaaa"))
	if i < 0 {
		t.Fatal("test CSR does not contain its common name")
	}
	tamperedDER[i] = 'b'

	ecKey := func(c elliptic.Curve) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}

	tests := []struct {
		name string
		in   []byte
		want error // nil: accepted
	}{
		{"P-256", valid, nil},
		{"P-384", csrPEM(t, mustKey(t, ca.ECP384), nil), nil},
		{"Ed25519", csrPEM(t, mustKey(t, ca.Ed25519), nil), nil},
		{"RSA-2048", csrPEM(t, mustKey(t, ca.RSA2048), nil), nil},
		{"RSA-4096", csrPEM(t, loadTestKey(t, "rsa-4096.key.pem"), nil), nil},
		{"NEW CERTIFICATE REQUEST block", pemOf("NEW CERTIFICATE REQUEST", validDER), nil},
		{"text around the block", append(append([]byte("csr follows\n"), valid...), "\ntrailing words\n"...), nil},
		{"empty", nil, ca.ErrBadCSR},
		{"no PEM", []byte("MIIBhello"), ca.ErrBadCSR},
		{"raw DER", validDER, ca.ErrBadCSR},
		{"wrong PEM type", pemOf("CERTIFICATE", validDER), ca.ErrBadCSR},
		{"two blocks", append(append([]byte{}, valid...), valid...), ca.ErrBadCSR},
		{"CSR then certificate", append(append([]byte{}, valid...), pemOf("CERTIFICATE", validDER)...), ca.ErrBadCSR},
		{"truncated DER", pemOf("CERTIFICATE REQUEST", validDER[:len(validDER)/2]), ca.ErrBadCSR},
		{"truncated by one byte", pemOf("CERTIFICATE REQUEST", validDER[:len(validDER)-1]), ca.ErrBadCSR},
		{"trailing byte in DER", pemOf("CERTIFICATE REQUEST", append(append([]byte{}, validDER...), 0)), ca.ErrBadCSR},
		{"tampered signature", pemOf("CERTIFICATE REQUEST", tamperedDER), ca.ErrBadCSR},
		{"empty block", pemOf("CERTIFICATE REQUEST", nil), ca.ErrBadCSR},
		{"oversized", append(append([]byte{}, valid...), bytes.Repeat([]byte(" "), 33<<10)...), ca.ErrBadCSR},
		{"RSA-1024", csrPEM(t, loadTestKey(t, "rsa-1024.key.pem"), nil), ca.ErrKeyType},
		{"P-224", csrPEM(t, ecKey(elliptic.P224()), nil), ca.ErrKeyType},
		{"P-521", csrPEM(t, ecKey(elliptic.P521()), nil), ca.ErrKeyType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ca.ParseCSR(tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ParseCSR: %v", err)
				}
				if err := csr.CheckSignature(); err != nil {
					t.Fatalf("accepted CSR does not verify: %v", err)
				}
				return
			}
			if csr != nil || !errors.Is(err, tt.want) {
				t.Fatalf("ParseCSR = %v, %v; want nil, %v", csr != nil, err, tt.want)
			}
			other := ca.ErrKeyType
			if tt.want == ca.ErrKeyType {
				other = ca.ErrBadCSR
			}
			if errors.Is(err, other) {
				t.Fatalf("ParseCSR error %v wraps both ErrBadCSR and ErrKeyType", err)
			}
		})
	}
}

func TestParseCSRKeepsRequestedNamesOut(t *testing.T) {
	// ParseCSR returns what the CSR says; the Authority must ignore it.
	// This checks the first half: a CSR asking for names still parses, so
	// the Issue tests below are meaningful.
	key := mustKey(t, ca.ECP256)
	in := csrPEM(t, key, &x509.CertificateRequest{DNSNames: []string{"evil.example"}, Subject: pkix.Name{CommonName: "evil"}})
	csr, err := ca.ParseCSR(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.DNSNames) != 1 || !csr.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatalf("parsed CSR lost its content: %v", csr.DNSNames)
	}
}
