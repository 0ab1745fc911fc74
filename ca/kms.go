package ca

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.step.sm/crypto/kms/apiv1"
	// Registers the "pkcs11" KMS type. Built without cgo, or with the
	// nopkcs11 tag, it registers a stub that refuses to open.
	_ "go.step.sm/crypto/kms/pkcs11"
)

// KMS is an open key manager holding CA keys that never leave it: a
// PKCS#11 token (an HSM, SoftHSM2, a YubiHSM...). Keys are named by URIs
// such as "pkcs11:id=a1b2;object=agentca-issuing-a1b2".
type KMS struct {
	uri string
	km  apiv1.KeyManager
}

// ErrKMSScheme is returned for a KMS URI whose scheme agentca does not
// support.
var ErrKMSScheme = errors.New("ca: unsupported KMS (want a pkcs11: URI)")

// IsKMSURI reports whether s names a key in a KMS (a "pkcs11:" URI) rather
// than a file.
func IsKMSURI(s string) bool {
	return strings.HasPrefix(strings.ToLower(s), "pkcs11:")
}

// OpenKMS opens the KMS uri names, e.g.
// "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=agentca?pin-source=/etc/agentca/pin".
func OpenKMS(ctx context.Context, uri string) (*KMS, error) {
	if !IsKMSURI(uri) {
		return nil, fmt.Errorf("%w: %q", ErrKMSScheme, redactPIN(uri))
	}
	t, err := apiv1.TypeOf(uri)
	if err != nil {
		return nil, fmt.Errorf("ca: KMS %s: %w", redactPIN(uri), err)
	}
	newKM, ok := apiv1.LoadKeyManagerNewFunc(t)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrKMSScheme, redactPIN(uri))
	}
	km, err := newKM(ctx, apiv1.Options{Type: t, URI: uri})
	if err != nil {
		return nil, fmt.Errorf("ca: KMS %s: %w", redactPIN(uri), err)
	}
	return &KMS{uri: uri, km: km}, nil
}

// redactPIN hides a pin-value in a URI that goes into an error message.
func redactPIN(uri string) string {
	i := strings.Index(uri, "pin-value=")
	if i < 0 {
		return uri
	}
	j := strings.IndexAny(uri[i:], "&;")
	if j < 0 {
		return uri[:i] + "pin-value=REDACTED"
	}
	return uri[:i] + "pin-value=REDACTED" + uri[i+j:]
}

// Close releases the KMS.
func (k *KMS) Close() error { return k.km.Close() }

// KMSKeyName is the URI of a new CA key in a PKCS#11 KMS: role ("root",
// "issuing", "ocsp", "log") and a per-CA tag tell keys apart on a token
// shared by several CAs.
func KMSKeyName(role, tag string) string {
	return fmt.Sprintf("pkcs11:id=%s;object=agentca-%s-%s", hexID(role, tag), role, tag)
}

// hexID is the CKA_ID of a key: the role's name then the tag, hex encoded.
func hexID(role, tag string) string {
	return fmt.Sprintf("%x", role+"-"+tag)
}

// CreateKey creates a key of type kt named name in the KMS and returns a
// signer for it. The private key cannot be extracted.
func (k *KMS) CreateKey(name string, kt KeyType) (crypto.Signer, error) {
	req := &apiv1.CreateKeyRequest{Name: name}
	switch kt {
	case ECP256:
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA256
	case ECP384:
		req.SignatureAlgorithm = apiv1.ECDSAWithSHA384
	case RSA2048:
		req.SignatureAlgorithm, req.Bits = apiv1.SHA256WithRSA, 2048
	default:
		return nil, fmt.Errorf("ca: key type %s is not supported in a KMS (want ec-p256, ec-p384 or rsa-2048)", kt)
	}
	resp, err := k.km.CreateKey(req)
	if err != nil {
		return nil, fmt.Errorf("ca: KMS: create %s: %w", name, err)
	}
	return k.Signer(resp.CreateSignerRequest.SigningKey)
}

// Signer returns a signer for the key named name; the key stays in the
// KMS.
func (k *KMS) Signer(name string) (crypto.Signer, error) {
	s, err := k.km.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: name})
	if err != nil {
		return nil, fmt.Errorf("ca: KMS: key %s: %w", name, err)
	}
	return s, nil
}

// DeleteKey removes the key named name when the KMS can delete keys; init
// uses it to leave nothing behind when it fails.
func (k *KMS) DeleteKey(name string) error {
	d, ok := k.km.(interface{ DeleteKey(string) error })
	if !ok {
		return nil
	}
	return d.DeleteKey(name)
}

// NewHierarchyWithKeys is NewHierarchy with the root and issuing keys given
// (from a KMS) rather than generated.
func NewHierarchyWithKeys(name string, rootKey, issKey crypto.Signer, now time.Time) (*Hierarchy, error) {
	rootTmpl := caTemplate(pkix.Name{Organization: []string{name}, CommonName: name + " Root CA"}, now, RootLifetime, 1)
	root, err := createCert(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	issTmpl := caTemplate(pkix.Name{Organization: []string{name}, CommonName: name + " Issuing CA"}, now, IssuingLifetime, 0)
	iss, err := createCert(issTmpl, root, issKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create issuing CA: %w", err)
	}
	return &Hierarchy{Root: root, RootKey: rootKey, Issuing: iss, IssuingKey: issKey}, nil
}
