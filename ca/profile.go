package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.step.sm/crypto/x509util"
)

// The leaf profile (X.509-SVID, https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md):
//   - empty subject, so the subjectAltName extension is critical;
//   - exactly one URI SAN, the SPIFFE ID, plus DNS SANs only where policy
//     allowed them;
//   - basicConstraints CA:false (critical);
//   - keyUsage digitalSignature only (critical);
//   - extKeyUsage serverAuth and clientAuth;
//   - subject and authority key identifiers.

func leafTemplate(req *Request, spiffeID *url.URL, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	ski, err := x509util.GenerateSubjectKeyID(req.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: subject key id: %w", err)
	}
	ips := make([]net.IP, 0, len(req.IPAddresses))
	for _, s := range req.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%w: bad IP address %q", ErrIdentity, s)
		}
		ips = append(ips, ip)
	}
	for _, d := range req.DNSNames {
		if err := checkDNSName(d); err != nil {
			return nil, err
		}
	}
	return &x509.Certificate{
		Subject:               pkix.Name{},
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		SubjectKeyId:          ski,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		// crypto/x509 marks the SAN extension critical because the
		// subject is empty (RFC 5280 §4.2.1.6).
		URIs:        []*url.URL{spiffeID},
		DNSNames:    req.DNSNames,
		IPAddresses: ips,
	}, nil
}

func checkDNSName(d string) error {
	if d == "" || len(d) > 253 {
		return fmt.Errorf("%w: bad DNS name %q", ErrIdentity, d)
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("%w: bad DNS name %q", ErrIdentity, d)
		}
	}
	return nil
}

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// responderTemplate is the delegated OCSP responder profile: subject named
// after the issuer, keyUsage digitalSignature, extKeyUsage OCSPSigning, and
// id-pkix-ocsp-nocheck (its value is NULL) so clients do not check the
// responder's own status.
func responderTemplate(iss *Issuer, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	ski, err := x509util.GenerateSubjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: subject key id: %w", err)
	}
	null, err := asn1.Marshal(asn1.NullRawValue)
	if err != nil {
		return nil, err
	}
	subject := pkix.Name{Organization: iss.Cert.Subject.Organization, CommonName: iss.Cert.Subject.CommonName + " OCSP Responder"}
	return &x509.Certificate{
		Subject:               subject,
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		SubjectKeyId:          ski,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidOCSPNoCheck, Value: null}},
	}, nil
}
