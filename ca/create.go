package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	"go.step.sm/crypto/x509util"
)

// Lifetimes of the CA certificates created by NewHierarchy.
const (
	RootLifetime    = 10 * 365 * 24 * time.Hour
	IssuingLifetime = 2 * 365 * 24 * time.Hour
)

// Hierarchy is a root CA and the issuing CA it signed.
type Hierarchy struct {
	Root       *x509.Certificate
	RootKey    crypto.Signer
	Issuing    *x509.Certificate
	IssuingKey crypto.Signer
}

// NewHierarchy creates a self-signed root and an issuing CA under it, both
// with keys of type kt, named after name (for example "agentca"). The
// issuing CA names no OCSP responder or CRL; the CA's own hierarchy is made
// by NewHierarchyWithKeys with its public HTTP URL.
func NewHierarchy(name string, kt KeyType, now time.Time) (*Hierarchy, error) {
	rootKey, err := GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	issKey, err := GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	return NewHierarchyWithKeys(name, rootKey, issKey, now, "")
}

func caTemplate(subject pkix.Name, now time.Time, lifetime time.Duration, pathLen int) *x509.Certificate {
	return &x509.Certificate{
		Subject:               subject,
		NotBefore:             now.Add(-time.Minute).UTC(),
		NotAfter:              now.Add(lifetime).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            pathLen,
		MaxPathLenZero:        pathLen == 0,
	}
}

// addStatusURLs names, in the certificate of an issuing CA certified by
// root, where its status is answered (docs/certificates.md): the OCSP
// responder at httpBase/ocsp (answering for root with a responder
// certificate root issued) and root's CRL at httpBase/crl/<root SKI hex>.
// An empty httpBase adds nothing.
func addStatusURLs(tmpl, root *x509.Certificate, httpBase string) {
	httpBase = strings.TrimSuffix(httpBase, "/")
	if httpBase == "" {
		return
	}
	tmpl.OCSPServer = []string{httpBase + "/ocsp"}
	tmpl.CRLDistributionPoints = []string{httpBase + "/crl/" + hex.EncodeToString(root.SubjectKeyId)}
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := NewSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.SubjectKeyId == nil {
		if tmpl.SubjectKeyId, err = x509util.GenerateSubjectKeyID(pub); err != nil {
			return nil, err
		}
	}
	return x509util.CreateCertificate(tmpl, parent, pub, signer)
}

// SerialBytes is the number of random bytes in a serial number: 127 bits of
// entropy once the top bit is cleared to keep it positive.
const SerialBytes = 16

// NewSerial returns a random positive serial number with at least 64 bits of
// entropy, as RFC 5280 and the CA/B Forum require.
func NewSerial(r io.Reader) (*big.Int, error) {
	b := make([]byte, SerialBytes)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("ca: serial: %w", err)
		}
		b[0] &= 0x7f
		if b[0] != 0 { // keep the full length so there is no leading zero byte
			return new(big.Int).SetBytes(b), nil
		}
	}
}
