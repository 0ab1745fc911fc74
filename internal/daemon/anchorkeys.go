package daemon

// The anchors' keys, as the anchor runtime asks for them (anchors.Keys).

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/anchors"
	"github.com/agentca/agentca/internal/config"
)

// anchorKeys are the CA keys as anchors.Keys.
type anchorKeys struct{ k *caKeys }

var _ anchors.Keys = anchorKeys{}

// Load implements anchors.Keys.
func (a anchorKeys) Load(role, ref string) (crypto.Signer, error) { return a.k.load(role, ref, false) }

// New implements anchors.Keys.
func (a anchorKeys) New(kt ca.KeyType) anchors.NewKeys { return &newAnchorKeys{keys: a.k, kt: kt} }

// InitJWTKey implements anchors.Keys: keys/jwt.key when the state
// directory has it (init made it, and every replica copied it) and the
// keys are not in a KMS.
func (a anchorKeys) InitJWTKey() string {
	if _, err := os.Stat(filepath.Join(a.k.dir, JWTKeyFile)); err == nil && a.k.kms == nil {
		return JWTKeyFile
	}
	return ""
}

// newAnchorKeys creates the keys of a staged anchor: in the KMS when one
// is configured, else as files under keys/anchors/; cleanup removes them
// when staging fails.
type newAnchorKeys struct {
	keys    *caKeys
	kt      ca.KeyType
	tag     string
	files   []string
	refs    []string // every key made, for the log
	kmsKeys *kmsKeys
}

func (n *newAnchorKeys) Create(role string) (crypto.Signer, string, error) {
	kt := n.kt
	if role == roleJWT {
		kt = ca.ECP256 // ES256, whatever the CA's key type
	}
	if n.tag == "" {
		tag, err := newKMSTag()
		if err != nil {
			return nil, "", err
		}
		n.tag = tag
	}
	if n.keys.kms != nil {
		if n.kmsKeys == nil {
			n.kmsKeys = &kmsKeys{kms: n.keys.kms}
		}
		var cfg config.Keys
		s, err := n.kmsKeys.create(&cfg, role, n.tag, kt)
		if err != nil {
			return nil, "", err
		}
		ref := n.kmsKeys.names[len(n.kmsKeys.names)-1]
		n.refs = append(n.refs, ref)
		return s, ref, nil
	}
	key, err := ca.GenerateKey(kt)
	if err != nil {
		return nil, "", err
	}
	rel := filepath.Join(KeysDir, "anchors", n.tag+"-"+role+".key")
	path := filepath.Join(n.keys.dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", err
	}
	// Listed before writing: a failed write may leave a partial file.
	n.files = append(n.files, path)
	n.refs = append(n.refs, rel)
	if err := ca.WriteKey(path, key, n.keys.password); err != nil {
		return nil, "", err
	}
	return key, rel, nil
}

func (n *newAnchorKeys) Cleanup() error {
	var errs []error
	for _, f := range n.files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if n.kmsKeys != nil {
		errs = append(errs, n.kmsKeys.cleanup())
	}
	return errors.Join(errs...)
}

// Refs implements anchors.NewKeys.
func (n *newAnchorKeys) Refs() []string { return n.refs }
