package translog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	ct "github.com/google/certificate-transparency-go"
)

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignVerify(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := buildTree(t, testLeafHashes(t, 1001))
	keys := map[string]crypto.Signer{"ecdsa-p256": newP256(t), "rsa-2048": rsaKey}
	for name, key := range keys {
		for _, tree := range []State{{}, st} {
			t.Run(fmt.Sprintf("%s/size-%d", name, tree.Size()), func(t *testing.T) {
				s, err := NewSigner(key)
				if err != nil {
					t.Fatal(err)
				}
				spki, _ := x509.MarshalPKIXPublicKey(key.Public())
				if s.LogID() != sha256.Sum256(spki) {
					t.Errorf("LogID() = %x, want SHA-256 of the SPKI", s.LogID())
				}
				sth, err := s.Sign(tree, 1767225600000)
				if err != nil {
					t.Fatal(err)
				}
				if sth.TreeSize != tree.Size() || !bytes.Equal(sth.SHA256RootHash[:], tree.Root()) || sth.Timestamp != 1767225600000 || sth.LogID != ct.SHA256Hash(s.LogID()) {
					t.Fatalf("STH %v does not describe the tree", sth)
				}
				// The CT project's verifier, on its own.
				v, err := ct.NewSignatureVerifier(key.Public())
				if err != nil {
					t.Fatal(err)
				}
				if err := v.VerifySTHSignature(*sth); err != nil {
					t.Fatalf("ct verifier: %v", err)
				}
				if err := VerifySTH(key.Public(), sth); err != nil {
					t.Fatal(err)
				}

				// Through get-sth JSON and back, as a CT client reads it.
				resp, err := STHResponse(sth)
				if err != nil {
					t.Fatal(err)
				}
				js, err := json.Marshal(resp)
				if err != nil {
					t.Fatal(err)
				}
				var got ct.GetSTHResponse
				if err := json.Unmarshal(js, &got); err != nil {
					t.Fatal(err)
				}
				back, err := got.ToSignedTreeHead()
				if err != nil {
					t.Fatal(err)
				}
				if err := v.VerifySTHSignature(*back); err != nil {
					t.Fatalf("ct verifier after JSON: %v", err)
				}
				if err := VerifySTH(key.Public(), back); err != nil {
					t.Fatalf("VerifySTH after JSON: %v", err)
				}
				if back.TreeSize != sth.TreeSize || back.Timestamp != sth.Timestamp || back.SHA256RootHash != sth.SHA256RootHash {
					t.Fatalf("get-sth JSON round trip: %v, want %v", back, sth)
				}
			})
		}
	}
}

func TestNewSignerRefuses(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"ed25519": edKey, "ecdsa-p384": p384, "rsa-1024": rsa1024} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewSigner(key); !errors.Is(err, ErrUnsupportedKey) {
				t.Fatalf("NewSigner() = %v, want ErrUnsupportedKey", err)
			}
			var sth ct.SignedTreeHead
			var se *STHError
			if err := VerifySTH(key.Public(), &sth); !errors.As(err, &se) {
				t.Fatalf("VerifySTH() = %v, want *STHError", err)
			}
		})
	}
}

// brokenSigner signs, but not what it was asked to.
type brokenSigner struct{ *ecdsa.PrivateKey }

func (b brokenSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	d := bytes.Clone(digest)
	d[0] ^= 1
	return b.PrivateKey.Sign(r, d, opts)
}

func TestSignChecksItsSignature(t *testing.T) {
	s, err := NewSigner(brokenSigner{newP256(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(State{}, 1); err == nil {
		t.Fatal("Sign with a key that signs the wrong digest succeeded")
	}
}

func TestTamperedSTH(t *testing.T) {
	key := newP256(t)
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := buildTree(t, testLeafHashes(t, 10))
	good, err := s.Sign(st, 1767225600000)
	if err != nil {
		t.Fatal(err)
	}
	other := newP256(t)
	tests := []struct {
		name   string
		pub    crypto.PublicKey
		tamper func(*ct.SignedTreeHead)
	}{
		{"size", key.Public(), func(h *ct.SignedTreeHead) { h.TreeSize++ }},
		{"timestamp", key.Public(), func(h *ct.SignedTreeHead) { h.Timestamp-- }},
		{"root", key.Public(), func(h *ct.SignedTreeHead) { h.SHA256RootHash[5] ^= 1 }},
		{"signature", key.Public(), func(h *ct.SignedTreeHead) {
			h.TreeHeadSignature.Signature = bytes.Clone(h.TreeHeadSignature.Signature)
			h.TreeHeadSignature.Signature[len(h.TreeHeadSignature.Signature)-1] ^= 1
		}},
		{"truncated signature", key.Public(), func(h *ct.SignedTreeHead) {
			h.TreeHeadSignature.Signature = h.TreeHeadSignature.Signature[:10]
		}},
		{"log ID", key.Public(), func(h *ct.SignedTreeHead) { h.LogID[0] ^= 1 }},
		{"version", key.Public(), func(h *ct.SignedTreeHead) { h.Version = 1 }},
		{"other key", other.Public(), func(*ct.SignedTreeHead) {}},
		{"other key, no log ID", other.Public(), func(h *ct.SignedTreeHead) { h.LogID = ct.SHA256Hash{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sth := *good
			tt.tamper(&sth)
			err := VerifySTH(tt.pub, &sth)
			var se *STHError
			if !errors.As(err, &se) {
				t.Fatalf("VerifySTH() = %v, want *STHError", err)
			}
			if se.TreeSize != sth.TreeSize || se.Timestamp != sth.Timestamp {
				t.Errorf("STHError does not carry the tree head: %+v", se)
			}
		})
	}
	if err := VerifySTH(key.Public(), good); err != nil {
		t.Fatalf("the untampered STH does not verify: %v", err)
	}
}
