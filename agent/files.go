package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentca/agentca/internal/fsutil"
	"go.step.sm/crypto/pemutil"
)

// File names inside an agent's output directory.
const (
	CertFile   = "cert.pem"   // leaf, then its chain
	KeyFile    = "key.pem"    // PKCS#8 private key, 0600
	BundleFile = "bundle.pem" // trust anchors
)

// WriteFiles writes the credentials and the bundle into dir. Each file is
// replaced atomically (temporary file, fsync, rename), the key first and
// the certificate second, so that a reader reloading on the certificate's
// change never sees a certificate without its key.
func WriteFiles(dir string, cr *Credentials, roots []*x509.Certificate) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	block, err := pemutil.Serialize(cr.Key, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("agent: encode key: %w", err)
	}
	if err := fsutil.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := fsutil.WriteFile(filepath.Join(dir, CertFile), cr.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return WriteBundle(dir, roots)
}

// WriteBundle atomically replaces dir/bundle.pem with roots.
func WriteBundle(dir string, roots []*x509.Certificate) error {
	var b bytes.Buffer
	for _, r := range roots {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
	}
	if err := fsutil.WriteFile(filepath.Join(dir, BundleFile), b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// LoadFiles reads the credentials and bundle from dir.
func LoadFiles(dir string) (*Credentials, []*x509.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	cr, err := credentialsFromTLS(&pair)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	roots, err := ParseCertificates(b)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %s: %w", BundleFile, err)
	}
	return cr, roots, nil
}
