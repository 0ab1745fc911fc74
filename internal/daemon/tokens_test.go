package daemon

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
)

func TestTokenKeyNotCreatedWithEtcd(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	keys := &caKeys{dir: dir}
	cfg := &config.Config{Storage: config.Storage{Type: "etcd"}, PublicURLs: config.PublicURLs{HTTPS: "https://ca.example.org"}}
	_, err := tokenOptions(cfg, keys)
	if err == nil || !strings.Contains(err.Error(), "same key") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("etcd without keys/token.key: %v, want a one-line refusal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, TokenKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("serve created %s with etcd storage: %v", TokenKeyFile, err)
	}
	// bbolt: a state directory older than tokens gets its key.
	cfg.Storage.Type = "bbolt"
	if _, err := tokenOptions(cfg, keys); err != nil {
		t.Fatal(err)
	}
	// Now present, etcd serve uses it.
	cfg.Storage.Type = "etcd"
	if _, err := tokenOptions(cfg, keys); err != nil {
		t.Fatal(err)
	}
}

func TestPreviousTokenKeys(t *testing.T) {
	dir := t.TempDir()
	old, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(old.Public())
	if err := os.WriteFile(filepath.Join(dir, "token.prev.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := previousTokenKeys(dir, []string{"token.prev.pub"})
	if err != nil || len(got) != 1 || !got[0].(*ecdsa.PublicKey).Equal(old.Public()) {
		t.Fatalf("%v %v", got, err)
	}
	rsaKey, _ := ca.GenerateKey(ca.RSA2048)
	der, _ = x509.MarshalPKIXPublicKey(rsaKey.Public())
	_ = os.WriteFile(filepath.Join(dir, "rsa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	for _, bad := range []string{"missing.pub", "rsa.pub"} {
		if _, err := previousTokenKeys(dir, []string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
