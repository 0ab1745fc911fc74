// Package awsiid is the aws-iid provisioner: an EC2 instance proves which
// instance it is with its instance identity document, which AWS signs.
//
// The token is JSON, {"document": b64, "rsa2048": b64} or
// {"document": b64, "signature": b64}: the document exactly as the instance
// metadata service served it, and either its "rsa2048" PKCS#7 SignedData or
// the legacy base64 RSA-SHA256 "signature" (see agent.AWSIdentity).
//
// Verified, in order: the document names a region in the regions allow-list
// (when one is configured) for which a certificate is configured; the
// PKCS#7 message has exactly one signer, a SHA-2 digest, and signed content
// equal to the document byte for byte, and its signature verifies under that
// region's certificate — only the configured certificates are considered,
// never one embedded in the message, which anyone can put there; or, for the
// legacy form, the RSA-SHA256 signature verifies under one of the region's
// certificates configured for that use. Then the document's fields are well
// formed, its account is in the accounts allow-list, and the instance is no
// older than max_instance_age (from pendingTime, the instance's last start).
//
// The certificates are AWS's published per-region RSA-2048 certificates,
// embedded in the binary (certs/aws-rsa2048.pem), or a certificates_file
// that replaces them. AWS signs the legacy "signature" with different,
// 1024-bit keys, which are not shipped: the legacy form is accepted only
// for regions whose certificate a certificates_file lists with
// "Use: signature".
//
// Any AWS account can launch an instance and obtain a validly signed
// document, so the accounts allow-list is required. A document is not
// secret and never expires, so each instance enrolls once (trust on first
// use): Identity.Once is "aws-iid:<provisioner>:<account>:<instance-id>",
// recorded with the certificate in the same transaction; renewals go
// through mTLS, and an operator clears the key to let an instance enroll
// again.
package awsiid

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/internal/pkcs7util"
	"github.com/agentca/agentca/provisioners/internal/strictjson"
)

// Type is the provisioner type in the configuration.
const Type = "aws-iid"

// DefaultTemplate is the SPIFFE ID template when the configuration gives
// none.
const DefaultTemplate = "spiffe://{{.trust_domain}}/aws/{{.account}}/{{.region}}/{{.instance_id}}"

// Claim names, for templates.
const (
	ClaimAccount          = "account"
	ClaimRegion           = "region"
	ClaimInstanceID       = "instance_id"
	ClaimAvailabilityZone = "availability_zone"
	ClaimImageID          = "image_id"
	ClaimInstanceType     = "instance_type"
	ClaimPrivateIP        = "private_ip" // only when the document has one
)

// MaxTokenSize bounds the token. A real one is about 3 KiB.
const MaxTokenSize = 32 << 10

// Config is an aws-iid provisioner's type-specific configuration.
type Config struct {
	// Accounts are the AWS account IDs (12 digits) accepted. Required.
	Accounts []string `json:"accounts"`
	// Regions, if set, are the only regions accepted.
	Regions []string `json:"regions,omitempty"`
	// CertificatesFile replaces the shipped certificates: PEM CERTIFICATE
	// blocks with a "Region:" header and an optional "Use:" header, as in
	// certs/aws-rsa2048.pem.
	CertificatesFile string `json:"certificates_file,omitempty"`
	// MaxInstanceAge, if set, refuses instances started longer ago (Go
	// duration, e.g. "10m"), measured from the document's pendingTime.
	MaxInstanceAge string `json:"max_instance_age,omitempty"`
}

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE  = regexp.MustCompile(`^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$`)
)

// ParseConfig decodes and validates the options strictly: unknown fields
// are errors, and errors name the field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	var c Config
	if err := strictjson.Decode(raw, &c, "options"); err != nil {
		return nil, fmt.Errorf("awsiid: %w", err)
	}
	bad := func(field, format string, args ...any) (*Config, error) {
		return nil, fmt.Errorf("awsiid: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if len(c.Accounts) == 0 {
		return bad("accounts", "required (any AWS account can obtain a signed instance identity document)")
	}
	if err := strictjson.Each("accounts", c.Accounts, accountRE.MatchString, "a 12-digit AWS account ID"); err != nil {
		return nil, fmt.Errorf("awsiid: %w", err)
	}
	if err := strictjson.Each("regions", c.Regions, regionRE.MatchString, "an AWS region name"); err != nil {
		return nil, fmt.Errorf("awsiid: %w", err)
	}
	if c.CertificatesFile != "" && strings.TrimSpace(c.CertificatesFile) != c.CertificatesFile {
		return bad("certificates_file", "leading or trailing space")
	}
	if c.MaxInstanceAge != "" {
		d, err := time.ParseDuration(c.MaxInstanceAge)
		if err != nil {
			return bad("max_instance_age", "%q is not a duration such as \"10m\"", c.MaxInstanceAge)
		}
		if d <= 0 {
			return bad("max_instance_age", "must be positive")
		}
	}
	return &c, nil
}

// Options are a provisioner's dependencies. The zero value is usable.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger records which certificates were loaded; nil discards.
	Logger *slog.Logger
}

// Provisioner is an aws-iid provisioner. It is safe for concurrent use.
type Provisioner struct {
	name     string
	accounts []string
	regions  []string // empty: any region with a certificate
	maxAge   time.Duration
	certs    map[string]*regionCerts
	now      func() time.Time
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// New returns the provisioner called name. A certificates_file is read
// now; every allow-listed region must have a certificate.
func New(name string, cfg *Config, opts Options) (*Provisioner, error) {
	if name == "" || cfg == nil {
		return nil, errors.New("awsiid: name and config are required")
	}
	if len(cfg.Accounts) == 0 {
		return nil, errors.New("awsiid: accounts: required")
	}
	var maxAge time.Duration
	if cfg.MaxInstanceAge != "" {
		d, err := time.ParseDuration(cfg.MaxInstanceAge)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("awsiid: max_instance_age: %q is not a positive duration", cfg.MaxInstanceAge)
		}
		maxAge = d
	}
	source, pemData := "shipped AWS RSA-2048 certificates", shippedCertificates
	if cfg.CertificatesFile != "" {
		b, err := os.ReadFile(cfg.CertificatesFile)
		if err != nil {
			return nil, fmt.Errorf("awsiid: certificates_file: %w", err)
		}
		source, pemData = cfg.CertificatesFile, b
	}
	certs, err := parseCertificates(pemData)
	if err != nil {
		if cfg.CertificatesFile != "" {
			return nil, fmt.Errorf("awsiid: certificates_file: %s: %w", cfg.CertificatesFile, err)
		}
		return nil, fmt.Errorf("awsiid: shipped certificates: %w", err)
	}
	for i, r := range cfg.Regions {
		if certs[r] == nil {
			return nil, fmt.Errorf("awsiid: regions[%d]: no certificate for region %q in the %s", i, r, source)
		}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Debug("aws-iid certificates loaded", "provisioner", name, "source", source, "regions", len(certs))
	return &Provisioner{
		name:     name,
		accounts: slices.Clone(cfg.Accounts),
		regions:  slices.Clone(cfg.Regions),
		maxAge:   maxAge,
		certs:    certs,
		now:      now,
	}, nil
}

// refuse returns a refusal with a detail for the audit log.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: aws-iid: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// token is the request's token.
type token struct {
	Document  string `json:"document"`
	RSA2048   string `json:"rsa2048,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// Attest implements provisioners.Provisioner.
func (p *Provisioner) Attest(ctx context.Context, tok string) (*provisioners.Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(tok) > MaxTokenSize {
		return nil, refuse("token of %d bytes is larger than %d", len(tok), MaxTokenSize)
	}
	var t token
	if err := strictjson.Decode([]byte(tok), &t, "token"); err != nil {
		return nil, refuse("malformed %v", err)
	}
	if t.Document == "" {
		return nil, refuse("malformed token: no document")
	}
	if (t.RSA2048 == "") == (t.Signature == "") {
		return nil, refuse("malformed token: want exactly one of rsa2048 and signature")
	}
	doc, err := base64.StdEncoding.DecodeString(t.Document)
	if err != nil {
		return nil, refuse("malformed token: document: %v", err)
	}
	// Read the region to pick the certificate; nothing in the document is
	// believed before its signature is checked.
	d, err := parseDocument(doc)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if len(p.regions) > 0 && !slices.Contains(p.regions, d.Region) {
		return nil, refuse("region %q not allowed", d.Region)
	}
	rc := p.certs[d.Region]
	if t.RSA2048 != "" {
		if rc == nil || len(rc.pkcs7) == 0 {
			return nil, refuse("no certificate for region %q", d.Region)
		}
		if err := verifyPKCS7(doc, t.RSA2048, rc.pkcs7); err != nil {
			return nil, refuse("rsa2048: %v", err)
		}
	} else {
		if rc == nil || len(rc.signature) == 0 {
			return nil, refuse("no certificate for the legacy signature in region %q", d.Region)
		}
		if err := verifyLegacy(doc, t.Signature, rc.signature); err != nil {
			return nil, refuse("signature: %v", err)
		}
	}
	// The document is AWS's from here on.
	if err := d.validate(); err != nil {
		return nil, refuse("%v", err)
	}
	if !slices.Contains(p.accounts, d.AccountID) {
		return nil, refuse("account %q not allowed", d.AccountID)
	}
	if p.maxAge > 0 {
		if age := p.now().Sub(d.pending); age > p.maxAge {
			return nil, refuse("instance %s started %s ago (pendingTime %s), more than max_instance_age %s",
				d.InstanceID, age.Round(time.Second), d.PendingTime, p.maxAge)
		}
	}
	return &provisioners.Identity{
		Once:   []string{OnceKey(p.name, d.AccountID, d.InstanceID)},
		Claims: d.claims(),
	}, nil
}

// OnceKey is the replay key recorded when an instance enrolls through the
// provisioner called name; clearing it lets the instance enroll again.
func OnceKey(name, account, instanceID string) string {
	return Type + ":" + name + ":" + account + ":" + instanceID
}

// verifyPKCS7 checks the rsa2048 PKCS#7 SignedData: one signer, a SHA-2
// digest, content equal to doc, and a signature by one of certs, the
// configured certificates for the document's region. Certificates in the
// message are discarded: whoever made the message chose them.
func verifyPKCS7(doc []byte, b64 string, certs []*x509.Certificate) error {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("not base64: %v", err)
	}
	p7, err := pkcs7util.Parse(der)
	if err != nil {
		return err
	}
	if len(p7.Signers) != 1 {
		return fmt.Errorf("%d signers, want 1", len(p7.Signers))
	}
	if !bytes.Equal(p7.Content, doc) {
		return errors.New("the signed content is not the document")
	}
	if !pkcs7util.StrongDigest(p7.Signers[0].DigestAlgorithm.Algorithm) {
		return fmt.Errorf("digest algorithm %s not accepted", p7.Signers[0].DigestAlgorithm.Algorithm)
	}
	p7.Certificates = certs
	if err := p7.Verify(); err != nil {
		return fmt.Errorf("not signed by the region's AWS certificate: %v", err)
	}
	return nil
}

// verifyLegacy checks the legacy signature: RSA PKCS#1 v1.5 with SHA-256
// over doc, by one of certs.
func verifyLegacy(doc []byte, b64 string, certs []*x509.Certificate) error {
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("not base64: %v", err)
	}
	for _, c := range certs {
		if c.CheckSignature(x509.SHA256WithRSA, doc, sig) == nil {
			return nil
		}
	}
	return errors.New("not signed by the region's AWS certificate")
}
