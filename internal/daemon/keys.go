package daemon

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
)

// The CA keys' roles, as named in agentca.json's "keys".
const (
	roleRoot    = "root"
	roleIssuing = "issuing"
	roleOCSP    = "ocsp"
	roleLog     = "log"
	roleToken   = "token"
	roleJWT     = "jwt"
)

// caKeys finds the CA keys where agentca.json's "keys" says they live: PEM
// files (keys/*.key by default) or keys in a KMS that never leave it.
type caKeys struct {
	dir      string
	password []byte
	cfg      config.Keys
	kms      *ca.KMS
}

// openKeys opens the KMS when the configuration names one.
func openKeys(ctx context.Context, dir string, cfg config.Keys, password []byte) (*caKeys, error) {
	k := &caKeys{dir: dir, password: password, cfg: cfg}
	if cfg.KMS != "" {
		kms, err := ca.OpenKMS(ctx, cfg.KMS)
		if err != nil {
			return nil, err
		}
		k.kms = kms
	}
	return k, nil
}

// Close releases the KMS, if any.
func (k *caKeys) Close() error {
	if k.kms == nil {
		return nil
	}
	return k.kms.Close()
}

// ref is where the key of role lives: a KMS URI or a file path relative
// to the state directory.
func (k *caKeys) ref(role string) string {
	var r, def string
	switch role {
	case roleRoot:
		r, def = k.cfg.Root, RootKeyFile
	case roleIssuing:
		r, def = k.cfg.Issuing, IssuingKeyFile
	case roleOCSP:
		r, def = k.cfg.OCSP, OCSPKeyFile
	case roleLog:
		r, def = k.cfg.Log, LogKeyFile
	case roleToken:
		r, def = k.cfg.Token, TokenKeyFile
	case roleJWT:
		def = JWTKeyFile
	}
	if r == "" {
		return def
	}
	return r
}

// signer returns the key of role. A file key that does not exist is
// created when create is set (the OCSP and log keys of an older CA).
func (k *caKeys) signer(role string, create bool) (crypto.Signer, error) {
	return k.load(role, k.ref(role), create)
}

// load returns the key at r, a KMS URI or a file path relative to the
// state directory; role names it in errors.
func (k *caKeys) load(role, r string, create bool) (crypto.Signer, error) {
	if ca.IsKMSURI(r) {
		if k.kms == nil {
			return nil, fmt.Errorf("%s key %s is in a KMS but keys.kms is not set", role, r)
		}
		return k.kms.Signer(r)
	}
	path := r
	if !filepath.IsAbs(path) {
		path = filepath.Join(k.dir, path)
	}
	if create {
		return loadOrCreateKey(path, k.password)
	}
	return ca.ReadKey(path, k.password)
}

// kmsKeys are the keys init created in a KMS, so that a failed init can
// remove them.
type kmsKeys struct {
	kms   *ca.KMS
	names []string
}

// create makes the key of role in the KMS and records its name in cfg.
func (m *kmsKeys) create(cfg *config.Keys, role, tag string, kt ca.KeyType) (crypto.Signer, error) {
	name := ca.KMSKeyName(role, tag)
	s, err := m.kms.CreateKey(name, kt)
	if err != nil {
		return nil, err
	}
	m.names = append(m.names, name)
	switch role {
	case roleRoot:
		cfg.Root = name
	case roleIssuing:
		cfg.Issuing = name
	case roleOCSP:
		cfg.OCSP = name
	case roleLog:
		cfg.Log = name
	case roleToken:
		cfg.Token = name
	}
	return s, nil
}

// cleanup deletes the keys created so far.
func (m *kmsKeys) cleanup() error {
	var errs []error
	for _, n := range m.names {
		errs = append(errs, m.kms.DeleteKey(n))
	}
	return errors.Join(errs...)
}

// newKMSTag is the per-CA part of the KMS key names: several CAs can share
// a token.
func newKMSTag() (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
