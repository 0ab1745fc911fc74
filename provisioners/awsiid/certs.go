package awsiid

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// shippedCertificates are AWS's published RSA-2048 certificates, one per
// region; the file says where they come from.
//
//go:embed certs/aws-rsa2048.pem
var shippedCertificates []byte

// Uses of a certificate, the values of the "Use:" PEM header.
const (
	// UseRSA2048 verifies the rsa2048 PKCS#7 signature (the default).
	UseRSA2048 = "rsa2048"
	// UseSignature verifies the legacy base64 RSA-SHA256 signature.
	UseSignature = "signature"
)

// regionCerts are a region's certificates by use. A region may have
// several of each, as while AWS rotates one.
type regionCerts struct {
	pkcs7     []*x509.Certificate
	signature []*x509.Certificate
}

// parseCertificates reads PEM CERTIFICATE blocks, each with a "Region:"
// header (one region or several, comma-separated) and an optional "Use:"
// header (rsa2048, signature, or both, comma-separated; rsa2048 if
// absent). Text outside the blocks is ignored; anything else is an error.
func parseCertificates(data []byte) (map[string]*regionCerts, error) {
	out := map[string]*regionCerts{}
	rest := data
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d: PEM type %q, want CERTIFICATE", n, b.Type)
		}
		var regions, uses []string
		for k, v := range b.Headers {
			switch k {
			case "Region":
				regions = splitList(v)
			case "Use":
				uses = splitList(v)
			default:
				return nil, fmt.Errorf("block %d: unknown PEM header %q (want Region and Use)", n, k)
			}
		}
		if len(regions) == 0 {
			return nil, fmt.Errorf("block %d: no Region header", n)
		}
		if len(uses) == 0 {
			uses = []string{UseRSA2048}
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("block %d (%s): %w", n, strings.Join(regions, ", "), err)
		}
		if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("block %d (%s): %T key, AWS's are RSA", n, strings.Join(regions, ", "), cert.PublicKey)
		}
		for _, r := range regions {
			if !regionRE.MatchString(r) {
				return nil, fmt.Errorf("block %d: Region %q is not an AWS region name", n, r)
			}
			rc := out[r]
			if rc == nil {
				rc = &regionCerts{}
				out[r] = rc
			}
			for _, u := range uses {
				switch u {
				case UseRSA2048:
					rc.pkcs7 = append(rc.pkcs7, cert)
				case UseSignature:
					rc.signature = append(rc.signature, cert)
				default:
					return nil, fmt.Errorf("block %d (%s): Use %q, want %s or %s", n, r, u, UseRSA2048, UseSignature)
				}
			}
		}
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, errors.New("malformed PEM block")
	}
	if len(out) == 0 {
		return nil, errors.New("no certificates")
	}
	return out, nil
}

// splitList splits a comma-separated header value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
