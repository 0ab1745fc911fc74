package ca_test

import (
	"errors"
	"testing"

	"github.com/agentca/agentca/ca"
)

// FuzzParseCSR checks that ParseCSR never panics, that every failure wraps
// ErrBadCSR or ErrKeyType, and that every CSR it accepts carries a verified
// signature over an accepted key. Seeds are in testdata/fuzz/FuzzParseCSR.
func FuzzParseCSR(f *testing.F) {
	for _, kt := range ca.KeyTypes {
		if kt == ca.RSA2048 {
			continue // committed as a seed; generating it here is slow
		}
		f.Add(csrPEM(f, mustKey(f, kt), nil))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := ca.ParseCSR(in)
		if err != nil {
			if csr != nil {
				t.Fatalf("ParseCSR returned a CSR with error %v", err)
			}
			if !errors.Is(err, ca.ErrBadCSR) && !errors.Is(err, ca.ErrKeyType) {
				t.Fatalf("ParseCSR error %v wraps neither ErrBadCSR nor ErrKeyType", err)
			}
			return
		}
		if csr == nil {
			t.Fatal("ParseCSR returned neither a CSR nor an error")
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted CSR has a bad signature: %v", err)
		}
		if err := ca.CheckPublicKey(csr.PublicKey); err != nil {
			t.Fatalf("accepted CSR has a refused key: %v", err)
		}
		if len(in) > 32<<10 {
			t.Fatalf("accepted a %d-byte input", len(in))
		}
	})
}
