package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/ca"
)

// filesTestCredentials issues a certificate for a new key of type kt from
// c's authority and returns it as Credentials.
func filesTestCredentials(t *testing.T, c *clientTestCA, kt, id string) *agent.Credentials {
	t.Helper()
	key := newTestKey(t, kt)
	got, err := c.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: id, Provisioner: "join"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(got.DER)
	if err != nil {
		t.Fatal(err)
	}
	return &agent.Credentials{Key: key, Leaf: leaf, Chain: []*x509.Certificate{c.h.Issuing}, Serial: got.Serial,
		SPIFFEID: got.SPIFFEID, NotBefore: got.NotBefore, NotAfter: got.NotAfter}
}

func TestWriteLoadFiles(t *testing.T) {
	c := startClientTestCA(t)
	for _, kt := range []string{"ec-p256", "ec-p384", "ed25519", "rsa-2048"} {
		t.Run(kt, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			cr := filesTestCredentials(t, c, kt, "spiffe://example.org/agent/files")
			if err := agent.WriteFiles(dir, cr, c.roots); err != nil {
				t.Fatal(err)
			}
			for name, mode := range map[string]os.FileMode{agent.KeyFile: 0o600, agent.CertFile: 0o644, agent.BundleFile: 0o644} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != mode {
					t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), mode)
				}
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("created directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
			}
			keyPEM, err := os.ReadFile(filepath.Join(dir, agent.KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if block, _ := pem.Decode(keyPEM); block == nil || block.Type != "PRIVATE KEY" {
				t.Errorf("key.pem is not a PKCS#8 PEM key")
			}

			got, roots, err := agent.LoadFiles(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Leaf.Equal(cr.Leaf) || len(got.Chain) != 1 || !got.Chain[0].Equal(c.h.Issuing) {
				t.Error("certificate or chain differ after the round trip")
			}
			if !got.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cr.Key.Public()) {
				t.Error("key differs after the round trip")
			}
			if got.Serial != cr.Serial || got.Serial != hex.EncodeToString(cr.Leaf.SerialNumber.Bytes()) {
				t.Errorf("serial %s, want %s", got.Serial, cr.Serial)
			}
			if got.SPIFFEID != cr.SPIFFEID || !got.NotBefore.Equal(cr.NotBefore) || !got.NotAfter.Equal(cr.NotAfter) {
				t.Errorf("loaded = %s %s–%s, want %s %s–%s", got.SPIFFEID, got.NotBefore, got.NotAfter, cr.SPIFFEID, cr.NotBefore, cr.NotAfter)
			}
			if agent.KeyTypeOf(got.Key) != kt {
				t.Errorf("loaded key type %s, want %s", agent.KeyTypeOf(got.Key), kt)
			}
			if len(roots) != 1 || !roots[0].Equal(c.h.Root) {
				t.Errorf("bundle = %d roots", len(roots))
			}
		})
	}
}

func TestWriteFilesReplaces(t *testing.T) {
	c := startClientTestCA(t)
	dir := t.TempDir()
	first := filesTestCredentials(t, c, "ec-p256", "spiffe://example.org/agent/a")
	second := filesTestCredentials(t, c, "ed25519", "spiffe://example.org/agent/a")
	other, err := ca.NewHierarchy("next", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteFiles(dir, first, c.roots); err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteFiles(dir, second, []*x509.Certificate{c.h.Root, other.Root}); err != nil {
		t.Fatal(err)
	}
	got, roots, err := agent.LoadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Serial != second.Serial || len(roots) != 2 {
		t.Fatalf("loaded serial %s with %d roots, want %s with 2", got.Serial, len(roots), second.Serial)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 3 {
		t.Fatalf("directory holds %v, want only the three files (no temporary files)", names)
	}
}

func TestWriteFilesOrder(t *testing.T) {
	// WriteFiles must replace the key before the certificate, so that a
	// reader reloading on the certificate's change finds the matching key.
	// Blocking one of the targets (a directory where the file goes) shows
	// which writes happened before the failure.
	c := startClientTestCA(t)
	t.Run("certificate blocked: the key is already written", func(t *testing.T) {
		dir := t.TempDir()
		cr := filesTestCredentials(t, c, "ec-p256", "spiffe://example.org/agent/order")
		if err := os.Mkdir(filepath.Join(dir, agent.CertFile), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, agent.CertFile, "x"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := agent.WriteFiles(dir, cr, c.roots); err == nil {
			t.Fatal("WriteFiles succeeded with cert.pem a directory")
		}
		keyPEM, err := os.ReadFile(filepath.Join(dir, agent.KeyFile))
		if err != nil {
			t.Fatalf("the key was not written before the certificate: %v", err)
		}
		if !bytes.Contains(keyPEM, []byte("PRIVATE KEY")) {
			t.Fatal("key.pem is not a key")
		}
		if _, err := os.Stat(filepath.Join(dir, agent.BundleFile)); err == nil {
			t.Error("bundle.pem written although the certificate failed")
		}
	})
	t.Run("key blocked: the certificate is not written", func(t *testing.T) {
		dir := t.TempDir()
		cr := filesTestCredentials(t, c, "ec-p256", "spiffe://example.org/agent/order")
		if err := os.Mkdir(filepath.Join(dir, agent.KeyFile), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, agent.KeyFile, "x"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := agent.WriteFiles(dir, cr, c.roots); err == nil {
			t.Fatal("WriteFiles succeeded with key.pem a directory")
		}
		if _, err := os.Stat(filepath.Join(dir, agent.CertFile)); err == nil {
			t.Fatal("cert.pem written although the key could not be")
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left behind", e.Name())
			}
		}
	})
}

func TestLoadFilesErrors(t *testing.T) {
	c := startClientTestCA(t)
	write := func(t *testing.T) (string, *agent.Credentials) {
		dir := t.TempDir()
		cr := filesTestCredentials(t, c, "ec-p256", "spiffe://example.org/agent/load")
		if err := agent.WriteFiles(dir, cr, c.roots); err != nil {
			t.Fatal(err)
		}
		return dir, cr
	}
	tests := []struct {
		name  string
		spoil func(t *testing.T, dir string)
	}{
		{"missing directory", func(t *testing.T, dir string) { os.RemoveAll(dir) }},
		{"missing key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, agent.KeyFile)) }},
		{"missing bundle", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, agent.BundleFile)) }},
		{"key of another certificate", func(t *testing.T, dir string) {
			other := t.TempDir()
			if err := agent.WriteFiles(other, filesTestCredentials(t, c, "ec-p256", "spiffe://example.org/x"), c.roots); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(other, agent.KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, agent.KeyFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"bundle with a key in it", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, agent.KeyFile))
			if err := os.WriteFile(filepath.Join(dir, agent.BundleFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty bundle", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, agent.BundleFile), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := write(t)
			tt.spoil(t, dir)
			if cr, _, err := agent.LoadFiles(dir); err == nil {
				t.Fatalf("LoadFiles = %s, want an error", cr.Serial)
			}
		})
	}
	t.Run("control", func(t *testing.T) {
		dir, cr := write(t)
		got, _, err := agent.LoadFiles(dir)
		if err != nil || got.Serial != cr.Serial {
			t.Fatalf("LoadFiles = %v", err)
		}
	})
}

func TestWriteBundle(t *testing.T) {
	c := startClientTestCA(t)
	dir := t.TempDir()
	other, err := ca.NewHierarchy("other", ca.Ed25519, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteBundle(dir, []*x509.Certificate{c.h.Root, other.Root}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, agent.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := agent.ParseCertificates(b)
	if err != nil || len(roots) != 2 || !roots[0].Equal(c.h.Root) || !roots[1].Equal(other.Root) {
		t.Fatalf("bundle = %d roots, %v", len(roots), err)
	}
}
