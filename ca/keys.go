package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/agentca/agentca/keys"
	"go.step.sm/crypto/pemutil"
)

// KeyType names a key algorithm accepted for CA keys and leaf keys (see
// package keys, which clients use without linking the CA).
type KeyType = keys.KeyType

// The key types agentca creates.
const (
	ECP256  = keys.ECP256
	ECP384  = keys.ECP384
	Ed25519 = keys.Ed25519
	RSA2048 = keys.RSA2048
)

// KeyTypes lists the accepted key type names, default first.
var KeyTypes = keys.KeyTypes

// ParseKeyType validates a key type name.
func ParseKeyType(s string) (KeyType, error) { return keys.ParseKeyType(s) }

// GenerateKey creates a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) { return keys.GenerateKey(kt) }

// ErrKeyType is returned for a public key agentca does not accept in a leaf.
var ErrKeyType = errors.New("ca: unsupported key type")

// Largest RSA modulus accepted in a leaf; larger keys only cost the CA CPU.
const maxRSABits = 4096

// CheckPublicKey accepts ECDSA P-256/P-384, Ed25519 and RSA keys of 2048 to
// 4096 bits, and refuses everything else with an error wrapping ErrKeyType.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s (want P-256 or P-384)", ErrKeyType, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > maxRSABits {
			return fmt.Errorf("%w: RSA-%d (want 2048 to %d bits)", ErrKeyType, n, maxRSABits)
		}
		return nil
	}
	return fmt.Errorf("%w: %T", ErrKeyType, pub)
}

// WriteKey writes a private key as PEM to a new file with mode 0600,
// encrypted with password when it is not empty.
func WriteKey(path string, key crypto.Signer, password []byte) error {
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if len(password) > 0 {
		opts = append(opts, pemutil.WithPassword(password))
	}
	block, err := pemutil.Serialize(key, opts...)
	if err != nil {
		return fmt.Errorf("ca: encode key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := pem.Encode(f, block); err != nil {
		f.Close()
		return fmt.Errorf("ca: write key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ca: write key: %w", err)
	}
	return f.Close()
}

// ErrKeyPermissions is returned when a key file can be read by group or
// others.
var ErrKeyPermissions = errors.New("ca: key file is readable by group or others")

// ErrKeyPassword is returned when a key file cannot be decrypted.
var ErrKeyPassword = errors.New("ca: cannot decrypt key (wrong or missing password)")

// ReadKey reads a PEM private key written by WriteKey. It refuses a file
// that group or others may access.
func ReadKey(path string, password []byte) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o (want 0600)", ErrKeyPermissions, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("ca: %s: no PEM block", path)
	}
	encrypted := block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != ""
	if encrypted && len(password) == 0 {
		return nil, fmt.Errorf("%w: %s is encrypted; pass --password-file", ErrKeyPassword, path)
	}
	var opts []pemutil.Options
	if len(password) > 0 {
		opts = append(opts, pemutil.WithPassword(password))
	}
	k, err := pemutil.ParseKey(b, opts...)
	if err != nil {
		if encrypted {
			return nil, fmt.Errorf("%w: %s", ErrKeyPassword, path)
		}
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: %s: %T is not a private key", path, k)
	}
	return s, nil
}
