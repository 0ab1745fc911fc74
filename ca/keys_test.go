package ca_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentca/agentca/ca"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    ca.KeyType
		wantErr bool
	}{
		{in: "ec-p256", want: ca.ECP256},
		{in: "ec-p384", want: ca.ECP384},
		{in: "ed25519", want: ca.Ed25519},
		{in: "rsa-2048", want: ca.RSA2048},
		{in: "", wantErr: true},
		{in: "EC-P256", wantErr: true},
		{in: "ec-p521", wantErr: true},
		{in: "rsa-1024", wantErr: true},
		{in: "rsa", wantErr: true},
		{in: " ec-p256", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ca.ParseKeyType(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseKeyType(%q) = %q, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseKeyType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	if ca.KeyTypes[0] != ca.ECP256 || len(ca.KeyTypes) != 4 {
		t.Errorf("KeyTypes = %v, want 4 types with ec-p256 first", ca.KeyTypes)
	}
}

func TestGenerateKey(t *testing.T) {
	tests := []struct {
		kt    ca.KeyType
		check func(crypto.PublicKey) bool
	}{
		{ca.ECP256, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P256() }},
		{ca.ECP384, func(p crypto.PublicKey) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P384() }},
		{ca.Ed25519, func(p crypto.PublicKey) bool { _, ok := p.(ed25519.PublicKey); return ok }},
		{ca.RSA2048, func(p crypto.PublicKey) bool { k, ok := p.(*rsa.PublicKey); return ok && k.N.BitLen() == 2048 }},
	}
	for _, tt := range tests {
		t.Run(string(tt.kt), func(t *testing.T) {
			k, err := ca.GenerateKey(tt.kt)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(k.Public()) {
				t.Fatalf("GenerateKey(%s) made a %T", tt.kt, k.Public())
			}
			if err := ca.CheckPublicKey(k.Public()); err != nil {
				t.Fatalf("CheckPublicKey refuses a key GenerateKey made: %v", err)
			}
			k2 := mustKey(t, tt.kt)
			if k2.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Fatal("two calls made the same key")
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		if k, err := ca.GenerateKey("dsa"); err == nil {
			t.Fatalf("GenerateKey(dsa) = %T, want an error", k)
		}
	})
}

func TestCheckPublicKey(t *testing.T) {
	ecKey := func(c elliptic.Curve) crypto.PublicKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k.Public()
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// CheckPublicKey looks only at the modulus size; a synthetic 8200-bit
	// modulus spares generating a real key.
	huge := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 8199), E: 65537}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		ok   bool
	}{
		{"P-256", ecKey(elliptic.P256()), true},
		{"P-384", ecKey(elliptic.P384()), true},
		{"Ed25519", mustKey(t, ca.Ed25519).Public(), true},
		{"RSA-2048", mustKey(t, ca.RSA2048).Public(), true},
		{"RSA-4096", loadTestKey(t, "rsa-4096.key.pem").Public(), true},
		{"RSA-1024", loadTestKey(t, "rsa-1024.key.pem").Public(), false},
		{"RSA-8200", huge, false},
		{"P-224", ecKey(elliptic.P224()), false},
		{"P-521", ecKey(elliptic.P521()), false},
		{"X25519", x25519.PublicKey(), false},
		{"private key", mustKey(t, ca.ECP256), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.CheckPublicKey(tt.pub)
			if tt.ok {
				if err != nil {
					t.Fatalf("CheckPublicKey(%s) = %v, want nil", tt.name, err)
				}
				return
			}
			if !errors.Is(err, ca.ErrKeyType) {
				t.Fatalf("CheckPublicKey(%s) = %v, want ErrKeyType", tt.name, err)
			}
		})
	}
}

func TestWriteReadKey(t *testing.T) {
	for _, kt := range ca.KeyTypes {
		for _, password := range []string{"", "correct horse battery staple"} {
			name := string(kt) + "/plain"
			if password != "" {
				// Key derivation is deliberately slow (very slow under
				// -race) and does not depend on the key type: one
				// encrypted round trip is enough.
				if kt != ca.ECP256 {
					continue
				}
				name = string(kt) + "/encrypted"
			}
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "ca.key")
				key := mustKey(t, kt)
				if err := ca.WriteKey(path, key, []byte(password)); err != nil {
					t.Fatal(err)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("key file mode = %04o, want 0600", fi.Mode().Perm())
				}
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if password != "" && !bytes.Contains(raw, []byte("ENCRYPTED")) {
					t.Errorf("a key written with a password is not encrypted:\n%s", raw)
				}
				if password == "" && bytes.Contains(raw, []byte("ENCRYPTED")) {
					t.Errorf("a key written without a password is encrypted")
				}
				got, err := ca.ReadKey(path, []byte(password))
				if err != nil {
					t.Fatalf("ReadKey: %v", err)
				}
				if !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
					t.Fatal("ReadKey returned another key")
				}
				if err := ca.WriteKey(path, key, []byte(password)); err == nil {
					t.Error("WriteKey overwrote an existing key file")
				}
			})
		}
	}
}

func TestReadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	key := mustKey(t, ca.ECP256)
	encrypted := filepath.Join(dir, "enc.key")
	if err := ca.WriteKey(encrypted, key, []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.key")
	if err := ca.WriteKey(plain, key, nil); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	if err := ca.WriteKey(open, key, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	groupOnly := filepath.Join(dir, "group.key")
	if err := ca.WriteKey(groupOnly, key, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupOnly, 0o640); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(notPEM, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		path     string
		password string
		want     error // nil: any error
	}{
		{"wrong password", encrypted, "wrong", ca.ErrKeyPassword},
		{"missing password", encrypted, "", ca.ErrKeyPassword},
		{"mode 0644", open, "", ca.ErrKeyPermissions},
		{"mode 0640", groupOnly, "", ca.ErrKeyPermissions},
		{"missing file", filepath.Join(dir, "nope.key"), "", fs.ErrNotExist},
		{"not PEM", notPEM, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ca.ReadKey(tt.path, []byte(tt.password))
			if err == nil {
				t.Fatalf("ReadKey = %T, want an error", k)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("ReadKey: %v, want %v", err, tt.want)
			}
			if tt.want == nil && (errors.Is(err, ca.ErrKeyPassword) || errors.Is(err, ca.ErrKeyPermissions)) {
				t.Fatalf("ReadKey: %v, want a plain decoding error", err)
			}
		})
	}
	// The permission check does not depend on the password or content.
	if _, err := ca.ReadKey(plain, nil); err != nil {
		t.Fatalf("ReadKey of the 0600 control file: %v", err)
	}
}
