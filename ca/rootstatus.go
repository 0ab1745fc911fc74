package ca

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"time"
)

// NewRootResponder certifies pub as a delegated OCSP responder of root,
// signed with rootKey: the responder that answers for the issuing CAs root
// certified (their status, not their leaves'). The profile is the one of
// the issuing CAs' responders (extKeyUsage OCSPSigning,
// id-pkix-ocsp-nocheck); it lives ttl, cut at the root's expiry. It is not
// recorded in the store: the root issues nothing else online.
func NewRootResponder(root *x509.Certificate, rootKey crypto.Signer, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	if err := keyMatches(root, rootKey); err != nil {
		return nil, err
	}
	now = now.Truncate(time.Second)
	notAfter := now.Add(ttl)
	if root.NotAfter.Before(notAfter) {
		notAfter = root.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: the root expired at %s", root.NotAfter.Format(time.RFC3339))
	}
	tmpl, err := responderTemplate(&Issuer{Cert: root}, pub, now.Add(-time.Minute), notAfter)
	if err != nil {
		return nil, err
	}
	cert, err := createCert(tmpl, root, pub, rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create root OCSP responder: %w", err)
	}
	return cert, nil
}
