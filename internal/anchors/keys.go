package anchors

import (
	"crypto"

	"github.com/agentca/agentca/ca"
)

// The anchors' key roles, as named in agentca.json's "keys".
const (
	roleRoot    = "root"
	roleIssuing = "issuing"
	roleJWT     = "jwt"
)

// Keys finds and makes the anchors' keys.
type Keys interface {
	// Load returns the key at ref, a KMS URI or a file path relative to
	// the state directory; role names it in errors.
	Load(role, ref string) (crypto.Signer, error)
	// New starts the keys of a new anchor, of type kt (a JWT-SVID key
	// is ES256 whatever kt).
	New(kt ca.KeyType) NewKeys
	// InitJWTKey is the JWT-SVID key init made (its ref), when the state
	// directory has one the active anchor may adopt; "" otherwise.
	InitJWTKey() string
}

// NewKeys are the keys of one new anchor, made one at a time.
type NewKeys interface {
	// Create makes the key of role and returns it with its ref.
	Create(role string) (crypto.Signer, string, error)
	// Cleanup removes every key made: staging failed.
	Cleanup() error
	// Refs names every key made, for the log.
	Refs() []string
}
