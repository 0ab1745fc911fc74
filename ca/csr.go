package ca

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrBadCSR is returned for a certificate request that cannot be parsed or
// whose signature does not verify.
var ErrBadCSR = errors.New("ca: bad certificate request")

// maxCSRBytes bounds the PEM input; a real CSR is well under 4 KiB.
const maxCSRBytes = 32 << 10

// ParseCSR decodes exactly one PEM "CERTIFICATE REQUEST" block, parses it,
// checks the key type, and verifies its signature (proof of possession).
// Every failure wraps ErrBadCSR or ErrKeyType.
func ParseCSR(pemData []byte) (*x509.CertificateRequest, error) {
	if len(pemData) > maxCSRBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadCSR, maxCSRBytes)
	}
	block, rest := pem.Decode(pemData)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrBadCSR)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrBadCSR, block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", ErrBadCSR, err)
	}
	return csr, nil
}
