package ca_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
	"testing/iotest"
	"time"

	"github.com/agentca/agentca/ca"
)

func TestNewHierarchy(t *testing.T) {
	for _, kt := range ca.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			h := testHierarchy(t, kt)
			root, iss := h.Root, h.Issuing

			if !bytes.Equal(root.RawSubject, root.RawIssuer) {
				t.Error("root is not self-issued")
			}
			if err := root.CheckSignatureFrom(root); err != nil {
				t.Errorf("root is not self-signed: %v", err)
			}
			if err := iss.CheckSignatureFrom(root); err != nil {
				t.Errorf("issuing CA is not signed by the root: %v", err)
			}
			for _, c := range []struct {
				name    string
				cert    *x509.Certificate
				key     crypto.Signer
				pathLen int
				life    time.Duration
			}{
				{"root", root, h.RootKey, 1, ca.RootLifetime},
				{"issuing", iss, h.IssuingKey, 0, ca.IssuingLifetime},
			} {
				if !c.cert.BasicConstraintsValid || !c.cert.IsCA {
					t.Errorf("%s: not a CA", c.name)
				}
				if c.cert.MaxPathLen != c.pathLen || (c.pathLen == 0) != c.cert.MaxPathLenZero {
					t.Errorf("%s: pathlen = %d (zero=%v), want %d", c.name, c.cert.MaxPathLen, c.cert.MaxPathLenZero, c.pathLen)
				}
				if c.cert.KeyUsage&x509.KeyUsageCertSign == 0 || c.cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
					t.Errorf("%s: key usage %b lacks certSign or cRLSign", c.name, c.cert.KeyUsage)
				}
				if len(c.cert.SubjectKeyId) == 0 {
					t.Errorf("%s: no subject key identifier", c.name)
				}
				if !c.key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.cert.PublicKey) {
					t.Errorf("%s: key does not match the certificate", c.name)
				}
				if err := ca.CheckPublicKey(c.cert.PublicKey); err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
				if !c.cert.NotBefore.Equal(testEpoch.Add(-time.Minute)) {
					t.Errorf("%s: NotBefore = %s, want %s", c.name, c.cert.NotBefore, testEpoch.Add(-time.Minute))
				}
				if !c.cert.NotAfter.Equal(testEpoch.Add(c.life)) {
					t.Errorf("%s: NotAfter = %s, want %s", c.name, c.cert.NotAfter, testEpoch.Add(c.life))
				}
				if c.cert.SerialNumber.Sign() <= 0 || c.cert.SerialNumber.BitLen() < 64 {
					t.Errorf("%s: serial %x is not a positive 64-bit+ number", c.name, c.cert.SerialNumber)
				}
			}
			if !bytes.Equal(iss.AuthorityKeyId, root.SubjectKeyId) {
				t.Errorf("issuing AKI %x != root SKI %x", iss.AuthorityKeyId, root.SubjectKeyId)
			}
			if bytes.Equal(root.SubjectKeyId, iss.SubjectKeyId) {
				t.Error("root and issuing CA share a key identifier")
			}
			pool := x509.NewCertPool()
			pool.AddCert(root)
			chains, err := iss.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: testEpoch.Add(time.Hour),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if err != nil || len(chains) != 1 || len(chains[0]) != 2 {
				t.Fatalf("issuing CA does not verify to the root: %v (%d chains)", err, len(chains))
			}
			if _, err := ca.NewIssuer(iss, h.IssuingKey, root); err != nil {
				t.Errorf("NewIssuer refuses a fresh hierarchy: %v", err)
			}
		})
	}
}

func TestNewIssuerRefuses(t *testing.T) {
	h := testHierarchy(t, ca.ECP256)
	other := testHierarchy(t, ca.ECP384)
	_, leaf := issue(t, mustAuthority(t, h), &ca.Request{SPIFFEID: "spiffe://example.org/x"})
	tests := []struct {
		name   string
		cert   *x509.Certificate
		signer crypto.Signer
		root   *x509.Certificate
	}{
		{"not a CA", leaf, h.IssuingKey, h.Root},
		{"key mismatch", h.Issuing, h.RootKey, h.Root},
		{"other root", h.Issuing, h.IssuingKey, other.Root},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if iss, err := ca.NewIssuer(tt.cert, tt.signer, tt.root); err == nil {
				t.Fatalf("NewIssuer = %v, want an error", iss.SKI)
			}
		})
	}
}

func mustAuthority(t *testing.T, h *ca.Hierarchy) *ca.Authority {
	t.Helper()
	a, _, _ := testAuthority(t, func(o *ca.Options) { o.Issuer = testIssuer(t, h) })
	return a
}

func TestNewSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s, err := ca.NewSerial(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 {
			t.Fatalf("serial %x is not positive", s)
		}
		// 16 bytes with the top bit cleared and a non-zero first byte:
		// between 121 and 127 bits, 16 bytes in DER without padding.
		if s.BitLen() < 121 || s.BitLen() > 127 {
			t.Fatalf("serial %x has %d bits", s, s.BitLen())
		}
		if seen[s.String()] {
			t.Fatalf("serial %x repeated", s)
		}
		seen[s.String()] = true
	}
	t.Run("leading zero byte redrawn", func(t *testing.T) {
		// The first draw starts with 0x80 (0x00 once the top bit is
		// cleared) and must be discarded.
		src := bytes.NewReader(append(bytes.Repeat([]byte{0x80}, ca.SerialBytes), bytes.Repeat([]byte{0x01}, ca.SerialBytes)...))
		s, err := ca.NewSerial(src)
		if err != nil {
			t.Fatal(err)
		}
		if want := bytes.Repeat([]byte{0x01}, ca.SerialBytes); !bytes.Equal(s.Bytes(), want) {
			t.Fatalf("serial = %x, want %x", s.Bytes(), want)
		}
	})
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("boom")
		if _, err := ca.NewSerial(iotest.ErrReader(boom)); !errors.Is(err, boom) {
			t.Fatalf("NewSerial = %v, want the reader's error", err)
		}
	})
	t.Run("short reads", func(t *testing.T) {
		// io.Reader may return fewer bytes than asked for. A source that
		// returns one byte per Read must still give SerialBytes random
		// bytes (io.ReadFull), not one random byte and zeros.
		src := iotest.OneByteReader(rand.Reader)
		seen := map[string]bool{}
		for range 200 {
			s, err := ca.NewSerial(src)
			if err != nil {
				t.Fatal(err)
			}
			if seen[s.String()] {
				t.Fatalf("serial %x repeated within 200 draws: NewSerial ignores short reads", s)
			}
			seen[s.String()] = true
		}
	})
	t.Run("reader runs dry", func(t *testing.T) {
		if s, err := ca.NewSerial(bytes.NewReader([]byte{1, 2, 3})); err == nil {
			t.Fatalf("NewSerial = %x from a reader with 3 bytes, want an error", s)
		}
	})
}
