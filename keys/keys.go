// Package keys names the key algorithms agentca accepts and makes keys of
// them. It is a leaf: the client library (agent) and the CA (ca) both use it,
// so a client links no server code.
package keys

import (
	"crypto"
	"fmt"

	"go.step.sm/crypto/keyutil"
)

// KeyType names a key algorithm accepted for CA keys and leaf keys.
type KeyType string

// The key types agentca creates.
const (
	ECP256  KeyType = "ec-p256"
	ECP384  KeyType = "ec-p384"
	Ed25519 KeyType = "ed25519"
	RSA2048 KeyType = "rsa-2048"
)

// KeyTypes lists the accepted key type names, default first.
var KeyTypes = []KeyType{ECP256, ECP384, Ed25519, RSA2048}

// ParseKeyType validates a key type name.
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range KeyTypes {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("ca: unknown key type %q (want ec-p256, ec-p384, ed25519 or rsa-2048)", s)
}

// GenerateKey creates a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case ECP256:
		return keyutil.GenerateSigner("EC", "P-256", 0)
	case ECP384:
		return keyutil.GenerateSigner("EC", "P-384", 0)
	case Ed25519:
		return keyutil.GenerateSigner("OKP", "Ed25519", 0)
	case RSA2048:
		return keyutil.GenerateSigner("RSA", "", 2048)
	}
	return nil, fmt.Errorf("ca: unknown key type %q", kt)
}
