// Package azureimds is the azure-imds provisioner: an Azure VM proves which
// VM it is with attested data from its instance metadata service, a PKCS#7
// SignedData that Azure signs over a JSON document naming the VM, its
// subscription and a nonce the caller chose.
//
// Enrollment is a challenge: the agent asks the CA for a nonce
// ((*Provisioner).Challenge, served as POST /v1/challenge), asks IMDS for
// /metadata/attested/document with that nonce, and sends the CA
// {"nonce": s, "signature": b64} (see agent.AzureAttested). Nonces are
// random, expire after nonce_ttl (5 minutes by default), live in memory
// (at most Options.MaxChallenges at once), and each is consumed by the
// first attestation that presents it, also under concurrency.
//
// Verified, in order: the nonce is outstanding here (issued by this
// provisioner, unexpired, unused); the message has exactly one signer, a
// SHA-2 digest, and a signature by the signer certificate it carries; that
// certificate chains, at the current time and for TLS server use, to the
// configured roots (the shipped Microsoft and DigiCert roots, or roots_file)
// through the configured intermediates (the shipped Microsoft TLS issuing
// CAs, or intermediates_file) or ones in the message; and it is issued for
// metadata.azure.com, metadata.azure.us or metadata.azure.cn — the roots
// are public Web PKI roots, so the name is what makes the signer Azure. Then
// the signed document carries the same nonce, a vmId and a subscriptionId
// in the subscriptions allow-list; it has not expired (timeStamp.expiresOn)
// and was created after the nonce was issued, both with a minute of clock
// skew. Only then is the nonce consumed.
//
// Any Azure subscription can obtain validly signed attested data, so the
// subscriptions allow-list is required. Each VM enrolls once (trust on
// first use): Identity.Once is "azure-imds:<provisioner>:<vmId>", recorded
// with the certificate in the same transaction; renewals go through mTLS,
// and an operator clears the key to let a VM enroll again.
package azureimds

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
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
const Type = "azure-imds"

// DefaultTemplate is the SPIFFE ID template when the configuration gives
// none.
const DefaultTemplate = "spiffe://{{.trust_domain}}/azure/{{.subscription_id}}/{{.vm_id}}"

// Claim names, for templates. GUIDs are lowercase.
const (
	ClaimVMID           = "vm_id"
	ClaimSubscriptionID = "subscription_id"
	ClaimSKU            = "sku"            // only when set
	ClaimLicenseType    = "license_type"   // only when set
	ClaimPlanName       = "plan_name"      // only when set
	ClaimPlanProduct    = "plan_product"   // only when set
	ClaimPlanPublisher  = "plan_publisher" // only when set
)

// DefaultNonceTTL is how long a nonce stays usable unless nonce_ttl says
// otherwise; MaxNonceTTL bounds nonce_ttl.
const (
	DefaultNonceTTL = 5 * time.Minute
	MaxNonceTTL     = time.Hour
)

// ClockSkew is the tolerance between the CA's clock and Azure's.
const ClockSkew = time.Minute

// MaxTokenSize bounds the token. A real one is about 5 KiB.
const MaxTokenSize = 64 << 10

// signerNames are the names Azure's attested-data signer is issued for:
// the public cloud, Azure Government, Azure China.
var signerNames = []string{"metadata.azure.com", "metadata.azure.us", "metadata.azure.cn"}

// The shipped roots and intermediates; the files say where they come from.
var (
	//go:embed certs/roots.pem
	shippedRoots []byte
	//go:embed certs/intermediates.pem
	shippedIntermediates []byte
)

// Config is an azure-imds provisioner's type-specific configuration.
type Config struct {
	// Subscriptions are the subscription IDs (GUIDs) accepted. Required.
	Subscriptions []string `json:"subscriptions"`
	// RootsFile replaces the shipped roots: PEM CERTIFICATE blocks.
	RootsFile string `json:"roots_file,omitempty"`
	// IntermediatesFile replaces the shipped intermediates: PEM
	// CERTIFICATE blocks. They help build the chain and are not trusted
	// by themselves.
	IntermediatesFile string `json:"intermediates_file,omitempty"`
	// NonceTTL is how long a nonce stays usable (Go duration, at most
	// 1h); empty means 5m.
	NonceTTL string `json:"nonce_ttl,omitempty"`
}

// ParseConfig decodes and validates the options strictly: unknown fields
// are errors, and errors name the field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	var c Config
	if err := strictjson.Decode(raw, &c, "options"); err != nil {
		return nil, fmt.Errorf("azureimds: %w", err)
	}
	bad := func(field, format string, args ...any) (*Config, error) {
		return nil, fmt.Errorf("azureimds: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if len(c.Subscriptions) == 0 {
		return bad("subscriptions", "required (any Azure subscription can obtain signed attested data)")
	}
	if err := strictjson.Each("subscriptions", c.Subscriptions, guidRE.MatchString, "a subscription ID (a GUID)"); err != nil {
		return nil, fmt.Errorf("azureimds: %w", err)
	}
	for _, f := range []struct{ name, v string }{{"roots_file", c.RootsFile}, {"intermediates_file", c.IntermediatesFile}} {
		if f.v != "" && strings.TrimSpace(f.v) != f.v {
			return bad(f.name, "leading or trailing space")
		}
	}
	if c.NonceTTL != "" {
		if _, err := parseTTL(c.NonceTTL); err != nil {
			return bad("nonce_ttl", "%v", err)
		}
	}
	return &c, nil
}

func parseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a duration such as \"5m\"", s)
	case d <= 0:
		return 0, errors.New("must be positive")
	case d > MaxNonceTTL:
		return 0, fmt.Errorf("at most %s", MaxNonceTTL)
	}
	return d, nil
}

// Options are a provisioner's dependencies. The zero value is usable.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger records which certificates were loaded; nil discards.
	Logger *slog.Logger
	// MaxChallenges bounds the outstanding nonces; zero means
	// DefaultMaxChallenges.
	MaxChallenges int
}

// Provisioner is an azure-imds provisioner. It is safe for concurrent use.
type Provisioner struct {
	name          string
	subscriptions []string // lowercase
	roots         *x509.CertPool
	intermediates *x509.CertPool
	challenges    *challenges
	now           func() time.Time
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// New returns the provisioner called name. The roots_file and
// intermediates_file are read now.
func New(name string, cfg *Config, opts Options) (*Provisioner, error) {
	if name == "" || cfg == nil {
		return nil, errors.New("azureimds: name and config are required")
	}
	if len(cfg.Subscriptions) == 0 {
		return nil, errors.New("azureimds: subscriptions: required")
	}
	ttl := DefaultNonceTTL
	if cfg.NonceTTL != "" {
		d, err := parseTTL(cfg.NonceTTL)
		if err != nil {
			return nil, fmt.Errorf("azureimds: nonce_ttl: %w", err)
		}
		ttl = d
	}
	if opts.MaxChallenges < 0 {
		return nil, errors.New("azureimds: MaxChallenges is negative")
	}
	maxChallenges := opts.MaxChallenges
	if maxChallenges == 0 {
		maxChallenges = DefaultMaxChallenges
	}
	roots, rootsSrc, err := loadPool("roots_file", cfg.RootsFile, shippedRoots, "shipped roots")
	if err != nil {
		return nil, err
	}
	inter, interSrc, err := loadPool("intermediates_file", cfg.IntermediatesFile, shippedIntermediates, "shipped intermediates")
	if err != nil {
		return nil, err
	}
	subs := make([]string, len(cfg.Subscriptions))
	for i, s := range cfg.Subscriptions {
		subs[i] = strings.ToLower(s)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Debug("azure-imds certificates loaded", "provisioner", name, "roots", rootsSrc, "intermediates", interSrc)
	return &Provisioner{
		name:          name,
		subscriptions: subs,
		roots:         roots,
		intermediates: inter,
		challenges:    &challenges{pending: map[string]challenge{}, max: maxChallenges, ttl: ttl},
		now:           now,
	}, nil
}

// loadPool reads PEM certificates from file, or from shipped when file is
// empty. Every block must be a certificate that parses.
func loadPool(field, file string, shipped []byte, shippedName string) (*x509.CertPool, string, error) {
	data, src := shipped, shippedName
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, "", fmt.Errorf("azureimds: %s: %w", field, err)
		}
		data, src = b, file
	}
	pool := x509.NewCertPool()
	n := 0
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if b.Type != "CERTIFICATE" {
			return nil, "", fmt.Errorf("azureimds: %s: %s: block %d: PEM type %q, want CERTIFICATE", field, src, n, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("azureimds: %s: %s: block %d: %w", field, src, n, err)
		}
		pool.AddCert(c)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, "", fmt.Errorf("azureimds: %s: %s: malformed PEM block", field, src)
	}
	if n == 0 {
		return nil, "", fmt.Errorf("azureimds: %s: %s: no certificates", field, src)
	}
	return pool, src, nil
}

// Challenge issues a nonce for one attestation and says until when it is
// usable. At MaxChallenges outstanding, the oldest makes room.
func (p *Provisioner) Challenge(ctx context.Context) (nonce string, expiresAt time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, err
	}
	return p.challenges.issue(p.now())
}

// OnceKey is the replay key recorded when a VM enrolls through the
// provisioner called name; clearing it lets the VM enroll again.
func OnceKey(name, vmID string) string {
	return Type + ":" + name + ":" + strings.ToLower(vmID)
}

// refuse returns a refusal with a detail for the audit log.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: azure-imds: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// token is the request's token.
type token struct {
	Nonce     string `json:"nonce"`
	Signature string `json:"signature"`
}

var nonceRE = regexp.MustCompile(fmt.Sprintf(`^[0-9]{%d}$`, NonceDigits))

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
	if !nonceRE.MatchString(t.Nonce) {
		return nil, refuse("malformed token: nonce %q is not %d digits", trunc(t.Nonce), NonceDigits)
	}
	if t.Signature == "" {
		return nil, refuse("malformed token: no signature")
	}
	now := p.now()
	ch, err := p.challenges.peek(t.Nonce, now)
	if err != nil {
		return nil, refuse("%v", err)
	}
	content, err := p.verify(t.Signature, now)
	if err != nil {
		return nil, refuse("%v", err)
	}
	// The document is Azure's from here on.
	d, err := parseDocument(content)
	if err != nil {
		return nil, refuse("%v", err)
	}
	switch {
	case d.Nonce != t.Nonce:
		return nil, refuse("the attested document's nonce %q is not the token's %q", trunc(d.Nonce), t.Nonce)
	case !slices.Contains(p.subscriptions, d.SubscriptionID):
		return nil, refuse("subscription %q not allowed", d.SubscriptionID)
	case now.After(d.expires.Add(ClockSkew)):
		return nil, refuse("attested document expired at %s", d.TimeStamp.ExpiresOn)
	case d.created.Before(ch.issued.Add(-ClockSkew)):
		return nil, refuse("attested document created at %s, before its nonce was issued at %s",
			d.TimeStamp.CreatedOn, ch.issued.UTC().Format(time.RFC3339))
	case d.created.After(now.Add(ClockSkew)):
		return nil, refuse("attested document created in the future, at %s", d.TimeStamp.CreatedOn)
	}
	if err := p.challenges.consume(t.Nonce, now); err != nil {
		return nil, refuse("%v", err)
	}
	return &provisioners.Identity{
		Once:   []string{OnceKey(p.name, d.VMID)},
		Claims: d.claims(),
	}, nil
}

// verify checks the PKCS#7 signature and its signer, and returns the
// signed content.
func (p *Provisioner) verify(b64 string, now time.Time) ([]byte, error) {
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("signature is not base64: %v", err)
	}
	p7, err := pkcs7util.Parse(der)
	if err != nil {
		return nil, err
	}
	if len(p7.Signers) != 1 {
		return nil, fmt.Errorf("%d signers, want 1", len(p7.Signers))
	}
	if alg := p7.Signers[0].DigestAlgorithm.Algorithm; !pkcs7util.StrongDigest(alg) {
		return nil, fmt.Errorf("digest algorithm %s not accepted", alg)
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return nil, errors.New("the signer's certificate is not in the message")
	}
	if err := p7.Verify(); err != nil {
		return nil, fmt.Errorf("bad signature: %v", err)
	}
	inter := p.intermediates.Clone()
	for _, c := range p7.Certificates {
		if c != signer {
			inter.AddCert(c)
		}
	}
	if _, err := signer.Verify(x509.VerifyOptions{
		Roots:         p.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("signer %q does not chain to the configured roots: %v", signer.Subject.CommonName, err)
	}
	if !slices.ContainsFunc(signerNames, func(n string) bool { return signer.VerifyHostname(n) == nil }) {
		return nil, fmt.Errorf("signer %q is not issued for %s", signer.Subject.CommonName, strings.Join(signerNames, ", "))
	}
	if len(p7.Content) == 0 {
		return nil, errors.New("no signed content")
	}
	return p7.Content, nil
}

// trunc shortens attacker-chosen text for the audit log.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
