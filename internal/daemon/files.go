// Package daemon wires agentca together: it initialises a state directory
// and runs the daemon (listeners, admin socket, signals) from it.
package daemon

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/translog"
)

// Names of the files in the state directory.
const (
	RootsFile      = "roots.pem"
	AdminSocket    = "admin.sock"
	KeysDir        = "keys"
	CertsDir       = "certs"
	RootKeyFile    = "keys/root.key"
	IssuingKeyFile = "keys/issuing.key"
	OCSPKeyFile    = "keys/ocsp.key"
	LogKeyFile     = "keys/log.key"
	LogPubFile     = "log.pub.pem"
	RootCertFile   = "certs/root.pem"
	IssuingCert    = "certs/issuing.pem"
)

// Fingerprint is the SHA-256 of a certificate's DER, in lowercase hex: the
// value `agentca enroll --fingerprint` pins.
func Fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// ReadPassword reads a password file, dropping one trailing newline. An
// empty path means no password.
func ReadPassword(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("password file %s is empty", path)
	}
	return b, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no CERTIFICATE PEM block", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// hasCA reports whether dir already holds a CA (any of its files).
func hasCA(dir string) (bool, error) {
	for _, name := range []string{config.FileName, "agentca.db", KeysDir, CertsDir, RootsFile} {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

// refuseForeign refuses a directory that exists, is not empty and is not
// an agentca state directory (hasCA said no): the CA's keys must not land
// among someone else's files (a source tree, a home directory). A
// volume's lost+found is not counted.
func refuseForeign(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() != "lost+found" {
			return fmt.Errorf("%s is not empty (%s) and is not an agentca state directory; give a new or empty directory", dir, e.Name())
		}
	}
	return nil
}

// ErrExists is returned by Init when the directory already holds a CA.
var ErrExists = errors.New("a CA already exists there; refusing to overwrite it")

// loadLogSigner reads the issuance log's key from keys (creating a P-256
// file key, as for a state directory older than the log, when there is
// none) and writes its public key to D/log.pub.pem when that file is
// missing. An existing log.pub.pem must hold that key: auditors pin it.
func loadLogSigner(dir string, keys *caKeys) (*translog.Signer, error) {
	key, err := keys.signer(roleLog, true)
	if err != nil {
		return nil, fmt.Errorf("log key: %w", err)
	}
	signer, err := translog.NewSigner(key)
	if err != nil {
		return nil, fmt.Errorf("log key %s: %w", keys.ref(roleLog), err)
	}
	pubPEM, err := logPublicPEM(key)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, LogPubFile)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := fsutil.WriteNew(path, pubPEM, 0o644); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case !bytes.Equal(bytes.TrimSpace(old), bytes.TrimSpace(pubPEM)):
		return nil, fmt.Errorf("%s does not hold the public key of %s", path, keys.ref(roleLog))
	}
	return signer, nil
}

// logPublicPEM is the content of log.pub.pem for key.
func logPublicPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("log key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// loadOrCreateKey reads the key at path, or creates a P-256 key there
// (0600, encrypted with password) when the file does not exist, as for a
// CA initialised before that key existed.
func loadOrCreateKey(path string, password []byte) (crypto.Signer, error) {
	k, err := ca.ReadKey(path, password)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	k, err = ca.GenerateKey(ca.ECP256)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteKey(path, k, password); err != nil {
		return nil, err
	}
	return k, nil
}

// ReadPublicKey reads a PEM "PUBLIC KEY" file (D/log.pub.pem).
func ReadPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: no PUBLIC KEY PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}
