// Package pkcs7util holds what the PKCS#7-based provisioners (aws-iid,
// azure-imds) share around github.com/smallstep/pkcs7.
package pkcs7util

import (
	"encoding/asn1"
	"fmt"

	"github.com/smallstep/pkcs7"
)

// Parse parses a PKCS#7 message, turning a panic in the parser on hostile
// input into an error.
func Parse(der []byte) (p7 *pkcs7.PKCS7, err error) {
	defer func() {
		if r := recover(); r != nil {
			p7, err = nil, fmt.Errorf("malformed PKCS#7: %v", r)
		}
	}()
	p7, err = pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("malformed PKCS#7: %v", err)
	}
	return p7, nil
}

// StrongDigest reports whether oid is SHA-256, SHA-384 or SHA-512.
func StrongDigest(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(pkcs7.OIDDigestAlgorithmSHA256) || oid.Equal(pkcs7.OIDDigestAlgorithmSHA384) ||
		oid.Equal(pkcs7.OIDDigestAlgorithmSHA512)
}
