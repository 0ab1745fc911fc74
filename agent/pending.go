package agent

import (
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/internal/fsutil"
	"go.step.sm/crypto/pemutil"
)

// PendingKeyFile, in an agent's output directory, holds the key of a
// renewal (or enrollment) not completed yet (PKCS#8, 0600).
//
// An attempt keeps its key until a certificate for it is installed: a
// retry after a failed attempt (an answer lost on the way, a file that
// could not be written, a restart) asks for the same key, so the CA
// answers with the certificate it may already have issued for it. A retry
// with another key would be a second renewal of one certificate onto
// another key, which the CA treats as theft: it revokes the whole lineage.
const PendingKeyFile = "key.pending.pem"

// PendingKey returns the key kept in dir/key.pending.pem, or makes one of
// keyType and keeps it there (written before it is used, so an attempt
// interrupted by a crash is retried with it). A kept key of another type
// than keyType (when set) is replaced.
func PendingKey(dir, keyType string) (crypto.Signer, error) {
	path := filepath.Join(dir, PendingKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		k, err := pemutil.ParseKey(b)
		if s, ok := k.(crypto.Signer); err == nil && ok && (keyType == "" || KeyTypeOf(s) == keyType) {
			return s, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("agent: %w", err)
	}
	k, err := NewKey(keyType)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	block, err := pemutil.Serialize(k, pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("agent: encode key: %w", err)
	}
	if err := fsutil.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return k, nil
}

// ClearPendingKey removes dir/key.pending.pem once a certificate for it is
// installed.
func ClearPendingKey(dir string) error {
	if err := os.Remove(filepath.Join(dir, PendingKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// attemptKey returns the key of the attempt under way (pending.go), kept
// in memory and, with a Dir, in PendingKeyFile. Only the Source's loop
// calls it (and NewSource before the loop starts).
func (s *Source) attemptKey() (crypto.Signer, error) {
	if s.pending != nil {
		return s.pending, nil
	}
	var k crypto.Signer
	var err error
	if s.cfg.Dir != "" {
		k, err = NextKey(s.cfg.Dir, s.cfg.KeyType, s.creds.Load())
	} else {
		k, err = NewKey(s.cfg.KeyType)
	}
	if err != nil {
		return nil, err
	}
	s.pending = k
	return k, nil
}

// NextKey is PendingKey for renewing cur (nil when enrolling): a kept key
// that is already cur's (installed, but a crash came before the pending
// file was removed) is replaced by a new one.
func NextKey(dir, keyType string, cur *Credentials) (crypto.Signer, error) {
	k, err := PendingKey(dir, keyType)
	if err != nil || cur == nil || !publicKeysEqual(k.Public(), cur.Key.Public()) {
		return k, err
	}
	if err := ClearPendingKey(dir); err != nil {
		return nil, err
	}
	return PendingKey(dir, keyType)
}

// installed forgets the pending key once a certificate for it is in
// place.
func (s *Source) installed(cr *Credentials) {
	if s.pending == nil || !publicKeysEqual(s.pending.Public(), cr.Key.Public()) {
		return
	}
	s.pending = nil
	if s.cfg.Dir != "" {
		if err := ClearPendingKey(s.cfg.Dir); err != nil {
			s.log.Warn("could not remove the pending key", "err", err)
		}
	}
}
