package daemon

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
)

// TokenKeyFile is where the access-token signing key lives by default
// (agentca.json keys.token overrides it). With bbolt storage, serve
// creates it for a state directory older than the token endpoint; with
// etcd storage it never does, since every replica must sign with the same
// key (init creates it; the operator copies it to the other replicas).
const TokenKeyFile = "keys/token.key"

// tokenOptions loads (or, with bbolt storage, creates) the token key and
// the previous public keys, and returns the token endpoint's options: the
// issuer is the public HTTPS URL.
func tokenOptions(cfg *config.Config, keys *caKeys) (*api.TokenOptions, error) {
	shared := cfg.Storage.Type == "etcd"
	key, err := keys.signer(roleToken, !shared)
	if err != nil {
		if shared && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("token key %s is missing: with etcd storage every replica must sign tokens with the same key; copy it (mode 0600) from the replica that has it, or from the state directory init made", keys.ref(roleToken))
		}
		return nil, fmt.Errorf("token key %s: %w", keys.ref(roleToken), err)
	}
	prev, err := previousTokenKeys(keys.dir, cfg.Tokens.PreviousKeys)
	if err != nil {
		return nil, err
	}
	def, max := cfg.Tokens.TTLs()
	return &api.TokenOptions{Signer: key, Issuer: strings.TrimSuffix(cfg.PublicURLs.HTTPS, "/"), DefaultTTL: def, MaxTTL: max,
		Scopes: cfg.Tokens.Scopes, Audiences: cfg.Tokens.Audiences, PreviousKeys: prev}, nil
}

// previousTokenKeys reads tokens.previous_keys: PEM files of ECDSA P-256
// public keys ("PUBLIC KEY"), relative to dir unless absolute.
func previousTokenKeys(dir string, paths []string) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("tokens.previous_keys: %w", err)
		}
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("tokens.previous_keys: %s: want a PEM PUBLIC KEY block (openssl pkey -in token.key -pubout)", p)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if k, ok := pub.(*ecdsa.PublicKey); err != nil || !ok || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("tokens.previous_keys: %s: not an ECDSA P-256 public key", p)
		}
		out = append(out, pub)
	}
	return out, nil
}
