// Package config reads and validates agentca.json, the daemon's
// configuration file in the state directory.
//
// Parsing is strict: unknown fields are an error, durations are Go duration
// strings, and every value is checked by Validate so that a daemon never
// starts on a configuration it would misread.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
)

// FileName is the configuration file's name inside the state directory.
const FileName = "agentca.json"

// Duration is a time.Duration that reads and writes Go duration strings
// ("5m", "1h30m") in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(formatDuration(time.Duration(d)))
}

// formatDuration is time.Duration.String without zero units: "5m", not
// "5m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"5m\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it like \"15m\", \"90s\" or \"1h30m\"", s)
	}
	*d = Duration(v)
	return nil
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Config is agentca.json.
type Config struct {
	TrustDomain    string        `json:"trust_domain"`
	Listen         Listen        `json:"listen"`
	PublicURLs     PublicURLs    `json:"public_urls"`
	ServerDNSNames []string      `json:"server_dns_names,omitempty"`
	KeyType        string        `json:"key_type,omitempty"`
	Storage        Storage       `json:"storage"`
	Leaf           Leaf          `json:"leaf"`
	OCSP           OCSP          `json:"ocsp,omitzero"`
	CRL            CRL           `json:"crl,omitzero"`
	Admins         []string      `json:"admins,omitempty"`
	Provisioners   []Provisioner `json:"provisioners"`
	Logging        LogConfig     `json:"logging,omitzero"`
	Keys           Keys          `json:"keys,omitzero"`
	Tokens         Tokens        `json:"tokens,omitzero"`
	Policy         Policy        `json:"policy,omitzero"`
	Limits         Limits        `json:"limits,omitzero"`
	JWTSVID        JWTSVID       `json:"jwt_svid,omitzero"`
	Federation     []Federation  `json:"federation,omitempty"`
}

// Keys says where each CA key lives: a PEM file (a path, relative to the
// state directory unless absolute) or a key in the KMS that KMS opens (a
// "pkcs11:id=...;object=..." URI). An absent field means the file in keys/
// (keys/root.key, keys/issuing.key, keys/ocsp.key, keys/log.key).
type Keys struct {
	// KMS opens the key manager, e.g.
	// "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=agentca?pin-source=/etc/agentca/pin".
	KMS     string `json:"kms,omitempty"`
	Root    string `json:"root,omitempty"`
	Issuing string `json:"issuing,omitempty"`
	OCSP    string `json:"ocsp,omitempty"`
	Log     string `json:"log,omitempty"`
	// Token signs access tokens (keys/token.key by default).
	Token string `json:"token,omitempty"`
}

// isKMSURI reports whether a key reference names a key in a KMS.
func isKMSURI(s string) bool { return strings.HasPrefix(strings.ToLower(s), "pkcs11:") }

// Listen holds the listener addresses.
type Listen struct {
	HTTPS string `json:"https"`
	HTTP  string `json:"http"`
}

// PublicURLs are the URLs clients use to reach the listeners; they go into
// certificates (AIA, CRL distribution points) and printed instructions.
type PublicURLs struct {
	HTTPS string `json:"https,omitempty"`
	HTTP  string `json:"http,omitempty"`
}

// Storage selects the store backend: "bbolt" (Path) or "etcd" (the
// fields after Retention; see docs/ha.md).
type Storage struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
	// Retention is how long a certificate's record (and a join token)
	// stays in the store after it expired; the issuance log keeps its
	// entry for ever. Absent means DefaultRetention.
	Retention Duration `json:"retention,omitempty"`

	// Endpoints are the etcd client URLs (http:// or https://).
	Endpoints []string `json:"endpoints,omitempty"`
	// Prefix is put before every etcd key (default "/agentca"), so
	// several CAs can share one cluster.
	Prefix string `json:"prefix,omitempty"`
	// CAFile verifies etcd's server certificates; CertFile and KeyFile
	// are a client certificate. Relative paths are in the state
	// directory.
	CAFile   string `json:"ca_file,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// Username and PasswordFile (a file holding the password) log in to
	// etcd when its authentication is enabled.
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	// RequestTimeout bounds each call to etcd (default 5s); past it an
	// issuance is refused with 503.
	RequestTimeout Duration `json:"request_timeout,omitempty"`
	// AttemptTimeout bounds one attempt of a transaction or a read
	// (default 1s, at most RequestTimeout): one sent to a member that
	// froze is given up and the next goes to another member.
	AttemptTimeout Duration `json:"attempt_timeout,omitempty"`
	// MaxTxnOps is the cluster's --max-txn-ops (default 128, etcd's
	// default); batches of issuances are sized to fit it.
	MaxTxnOps int `json:"max_txn_ops,omitempty"`
}

// DefaultEtcdPrefix is Storage.Prefix when agentca.json has none.
const DefaultEtcdPrefix = "/agentca"

// DefaultRetention is Storage.Retention when agentca.json has none.
const DefaultRetention = 7 * 24 * time.Hour

// RetentionOrDefault returns Retention, or DefaultRetention when unset.
func (s Storage) RetentionOrDefault() time.Duration {
	if s.Retention <= 0 {
		return DefaultRetention
	}
	return s.Retention.Std()
}

// Leaf holds the CA-wide leaf lifetime policy.
type Leaf struct {
	DefaultTTL Duration `json:"default_ttl"`
	MaxTTL     Duration `json:"max_ttl"`
	// MinTTL is the shortest lifetime a caller may ask for. Tests lower it
	// to seconds; the default is one minute.
	MinTTL Duration `json:"min_ttl,omitempty"`
}

// OCSP configures the responder.
type OCSP struct {
	// Validity is a response's nextUpdate - thisUpdate; default 5m.
	Validity Duration `json:"validity,omitempty"`
	// ResponderTTL is the lifetime of the delegated responder
	// certificate, renewed at two thirds; default 24h.
	ResponderTTL Duration `json:"responder_ttl,omitempty"`
	// MaxStaleness, on storage shared by replicas (etcd), is how long
	// after its last proof of having seen every revocation a replica
	// still answers "good" from its cache; past it, the status is read
	// from the store again (or tryLater). Default 1s.
	MaxStaleness Duration `json:"max_staleness,omitempty"`
}

// CRL configures the revocation lists.
type CRL struct {
	// Validity is a CRL's nextUpdate - thisUpdate; default 10m.
	Validity Duration `json:"validity,omitempty"`
}

// LogConfig selects the log format and level.
type LogConfig struct {
	Format string `json:"format,omitempty"` // "text" (default) or "json"
	Level  string `json:"level,omitempty"`  // "debug", "info" (default), "warn", "error"
}

// ReservedProvisionerPrefix starts the provisioner names the CA records on
// its own certificates ("agentca-server", "agentca-ocsp"); configured
// provisioners may not use it.
const ReservedProvisionerPrefix = "agentca-"

// Provisioner is one entry of "provisioners": the fields every type has,
// and Options, the type's own fields, which the provisioner's package
// parses strictly (unknown fields are an error there too).
type Provisioner struct {
	Type       string   `json:"type"`
	Name       string   `json:"name"`
	DefaultTTL Duration `json:"default_ttl,omitempty"`
	MaxTTL     Duration `json:"max_ttl,omitempty"`
	// SPIFFEIDTemplate renders the SPIFFE ID from the attested claims
	// (Go text/template, e.g. "spiffe://{{.trust_domain}}/ns/{{.namespace}}");
	// empty means the type's default.
	SPIFFEIDTemplate string `json:"spiffe_id_template,omitempty"`
	// DNSSANs are templates of DNS names to add beside the SPIFFE ID;
	// empty means none.
	DNSSANs []string `json:"dns_sans,omitempty"`
	// SingleUse makes each JWT's jti usable once (JWT types).
	SingleUse bool `json:"single_use,omitempty"`
	// TokenTTL is how long a join token stays usable (join-token only).
	TokenTTL Duration `json:"token_ttl,omitempty"`
	// Options are the type-specific fields, as a JSON object.
	Options json.RawMessage `json:"-"`
}

// commonProvisionerFields are the keys Provisioner decodes itself.
var commonProvisionerFields = map[string]bool{"type": true, "name": true, "default_ttl": true, "max_ttl": true,
	"spiffe_id_template": true, "dns_sans": true, "single_use": true, "token_ttl": true}

// UnmarshalJSON decodes the common fields strictly and keeps the others
// in Options.
func (p *Provisioner) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	common, rest := map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for k, v := range fields {
		if commonProvisionerFields[k] {
			common[k] = v
		} else {
			rest[k] = v
		}
	}
	cb, err := json.Marshal(common)
	if err != nil {
		return err
	}
	type plain Provisioner // no UnmarshalJSON: no recursion
	var out plain
	dec := json.NewDecoder(bytes.NewReader(cb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		return err
	}
	*p = Provisioner(out)
	p.Options = nil
	if len(rest) > 0 {
		if p.Options, err = json.Marshal(rest); err != nil {
			return err
		}
	}
	return nil
}

// MarshalJSON writes the common fields and Options as one object.
func (p Provisioner) MarshalJSON() ([]byte, error) {
	type plain Provisioner
	b, err := json.Marshal(plain(p))
	if err != nil || len(p.Options) == 0 {
		return b, err
	}
	var merged map[string]json.RawMessage
	if err := json.Unmarshal(b, &merged); err != nil {
		return nil, err
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal(p.Options, &opts); err != nil {
		return nil, fmt.Errorf("provisioner %q options: %w", p.Name, err)
	}
	for k, v := range opts {
		if commonProvisionerFields[k] {
			return nil, fmt.Errorf("provisioner %q options repeat the common field %q", p.Name, k)
		}
		merged[k] = v
	}
	return json.Marshal(merged)
}

// Provisioner types.
const (
	TypeJoinToken = "join-token"
	TypeK8sSA     = "k8s-sa"
	TypeAWSIID    = "aws-iid"
	TypeGCPIIT    = "gcp-iit"
	TypeAzureMSI  = "azure-msi"
	TypeAzureIMDS = "azure-imds"
)

// Types lists every provisioner type, in documentation order.
var Types = []string{TypeJoinToken, TypeK8sSA, TypeAWSIID, TypeGCPIIT, TypeAzureMSI, TypeAzureIMDS}

// Default returns the configuration agentca init writes for a trust domain.
func Default(trustDomain, httpsAddr, httpAddr string) *Config {
	c := &Config{
		TrustDomain:    trustDomain,
		Listen:         Listen{HTTPS: httpsAddr, HTTP: httpAddr},
		ServerDNSNames: []string{"localhost"},
		KeyType:        "ec-p256",
		Storage:        Storage{Type: "bbolt", Path: "agentca.db"},
		Leaf:           Leaf{DefaultTTL: Duration(identity.DefaultLeafTTL), MaxTTL: Duration(identity.DefaultMaxTTL), MinTTL: Duration(identity.DefaultMinTTL)},
		OCSP:           OCSP{Validity: Duration(5 * time.Minute), ResponderTTL: Duration(24 * time.Hour), MaxStaleness: Duration(time.Second)},
		CRL:            CRL{Validity: Duration(10 * time.Minute)},
		Provisioners:   []Provisioner{{Type: TypeJoinToken, Name: "join"}},
	}
	c.PublicURLs = PublicURLs{HTTPS: "https://" + httpsAddr, HTTP: "http://" + httpAddr}
	return c
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b)
}

// Parse decodes and validates a configuration, rejecting unknown fields.
func Parse(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(b, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("config: %s: trailing data after the JSON object", FileName)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal encodes c as indented JSON.
func (c *Config) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (c *Config) applyDefaults() {
	if c.Leaf.DefaultTTL == 0 {
		c.Leaf.DefaultTTL = Duration(identity.DefaultLeafTTL)
	}
	if c.Leaf.MaxTTL == 0 {
		c.Leaf.MaxTTL = Duration(identity.DefaultMaxTTL)
	}
	if c.Leaf.MinTTL == 0 {
		c.Leaf.MinTTL = Duration(identity.DefaultMinTTL)
	}
	if c.OCSP.Validity == 0 {
		c.OCSP.Validity = Duration(5 * time.Minute)
	}
	if c.OCSP.ResponderTTL == 0 {
		c.OCSP.ResponderTTL = Duration(24 * time.Hour)
	}
	if c.OCSP.MaxStaleness == 0 {
		c.OCSP.MaxStaleness = Duration(time.Second)
	}
	if c.CRL.Validity == 0 {
		c.CRL.Validity = Duration(10 * time.Minute)
	}
	if c.Storage.Type == "" {
		c.Storage.Type = "bbolt"
	}
	if c.Storage.Type == "bbolt" && c.Storage.Path == "" {
		c.Storage.Path = "agentca.db"
	}
	if c.Storage.Type == "etcd" && c.Storage.Prefix == "" {
		c.Storage.Prefix = DefaultEtcdPrefix
	}
	if c.KeyType == "" {
		c.KeyType = "ec-p256"
	}
	if c.PublicURLs.HTTPS == "" && c.Listen.HTTPS != "" {
		c.PublicURLs.HTTPS = "https://" + c.Listen.HTTPS
	}
	if c.PublicURLs.HTTP == "" && c.Listen.HTTP != "" {
		c.PublicURLs.HTTP = "http://" + c.Listen.HTTP
	}
	for i := range c.Provisioners {
		p := &c.Provisioners[i]
		if p.Type == TypeJoinToken && p.TokenTTL == 0 {
			p.TokenTTL = Duration(identity.DefaultTokenTTL)
		}
	}
}

// Validate checks every field and names the first one that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if err := identity.ValidateTrustDomain(c.TrustDomain); err != nil {
		bad("trust_domain", "%v", err)
	}
	c.validateListen(bad)
	c.validateStorage(bad)
	c.validateLeaf(bad)
	c.validateRevocation(bad)
	c.validateAdmins(bad)
	c.validateProvisioners(bad)
	c.validateLogging(bad)
	c.validateKeys(bad)
	c.validateTokens(bad)
	c.validateExchange(bad)
	c.Limits.validate(bad)
	c.validateJWTSVID(bad)
	c.validateFederation(bad)
	return errors.Join(errs...)
}

// validateListen checks the listen addresses and the public URLs.
func (c *Config) validateListen(bad func(field, format string, args ...any)) {
	for name, addr := range map[string]string{"listen.https": c.Listen.HTTPS, "listen.http": c.Listen.HTTP} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(name, "want host:port, got %q", addr)
		}
	}
	for name, u := range map[string]string{"public_urls.https": c.PublicURLs.HTTPS, "public_urls.http": c.PublicURLs.HTTP} {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			bad(name, "want an absolute http(s) URL, got %q", u)
		}
	}
}

// validateStorage checks the storage type, its settings and the retention.
func (c *Config) validateStorage(bad func(field, format string, args ...any)) {
	switch c.Storage.Type {
	case "bbolt":
		if len(c.Storage.Endpoints) > 0 || c.Storage.Prefix != "" || c.Storage.CAFile != "" || c.Storage.CertFile != "" ||
			c.Storage.KeyFile != "" || c.Storage.Username != "" || c.Storage.PasswordFile != "" || c.Storage.RequestTimeout != 0 || c.Storage.AttemptTimeout != 0 || c.Storage.MaxTxnOps != 0 {
			bad("storage", "etcd settings with type bbolt")
		}
	case "etcd":
		c.Storage.validateEtcd(bad)
	default:
		bad("storage.type", "unsupported storage %q (want bbolt or etcd)", c.Storage.Type)
	}
	if r := c.Storage.Retention.Std(); r != 0 && r < time.Minute {
		bad("storage.retention", "must be at least 1m")
	}
}

// validateLeaf checks the leaf lifetimes against each other and the ceiling.
func (c *Config) validateLeaf(bad func(field, format string, args ...any)) {
	l := c.Leaf
	if l.MinTTL.Std() < time.Second {
		bad("leaf.min_ttl", "must be at least 1s")
	}
	if l.MaxTTL.Std() > identity.Ceiling {
		bad("leaf.max_ttl", "%s is above the 24h ceiling", l.MaxTTL.Std())
	}
	if l.MaxTTL < l.MinTTL {
		bad("leaf.max_ttl", "%s is below leaf.min_ttl %s", l.MaxTTL.Std(), l.MinTTL.Std())
	}
	if l.DefaultTTL < l.MinTTL || l.DefaultTTL > l.MaxTTL {
		bad("leaf.default_ttl", "%s is outside [min_ttl %s, max_ttl %s]", l.DefaultTTL.Std(), l.MinTTL.Std(), l.MaxTTL.Std())
	}
}

// validateRevocation checks the OCSP and CRL validities (zero means the default).
func (c *Config) validateRevocation(bad func(field, format string, args ...any)) {
	if v := c.OCSP.Validity.Std(); v != 0 && (v < time.Second || v > 7*24*time.Hour) {
		bad("ocsp.validity", "%s is outside [1s, 168h]", v)
	}
	if v := c.OCSP.ResponderTTL.Std(); v != 0 && (v < time.Minute || v > 30*24*time.Hour) {
		bad("ocsp.responder_ttl", "%s is outside [1m, 720h]", v)
	}
	if v := c.CRL.Validity.Std(); v != 0 && (v < time.Second || v > 7*24*time.Hour) {
		bad("crl.validity", "%s is outside [1s, 168h]", v)
	}
}

// validateAdmins checks that every admin is a SPIFFE ID in the trust domain.
func (c *Config) validateAdmins(bad func(field, format string, args ...any)) {
	for i, a := range c.Admins {
		if err := identity.ValidateSPIFFEID(a, c.TrustDomain); err != nil {
			bad(fmt.Sprintf("admins[%d]", i), "%v", err)
		}
	}
}

// validateProvisioners checks each provisioner: a unique name outside the CA's
// own, its type and type-specific fields, its lifetimes within the leaf's.
func (c *Config) validateProvisioners(bad func(field, format string, args ...any)) {
	l := c.Leaf
	if len(c.Provisioners) == 0 {
		bad("provisioners", "at least one provisioner is required")
	}
	seen := map[string]bool{}
	for i, p := range c.Provisioners {
		field := fmt.Sprintf("provisioners[%d]", i)
		if p.Name == "" {
			bad(field+".name", "required")
		} else if seen[p.Name] {
			bad(field+".name", "duplicate provisioner name %q", p.Name)
		} else if strings.HasPrefix(p.Name, ReservedProvisionerPrefix) {
			bad(field+".name", "%q: names starting with %q are the CA's own (its server and OCSP responder certificates)", p.Name, ReservedProvisionerPrefix)
		}
		seen[p.Name] = true
		if p.SPIFFEIDTemplate != "" && identity.TemplateReserved(p.SPIFFEIDTemplate, c.TrustDomain) {
			bad(field+".spiffe_id_template", "%q names IDs under %s, reserved for the CA's own identities", p.SPIFFEIDTemplate, identity.ReservedSPIFFEPath+"/")
		}
		switch p.Type {
		case TypeJoinToken:
			if p.TokenTTL < 0 {
				bad(field+".token_ttl", "must not be negative")
			}
			if len(p.Options) > 0 {
				bad(field, "unknown field(s) for a join-token provisioner: %s", optionNames(p.Options))
			}
			if p.SPIFFEIDTemplate != "" || p.SingleUse || len(p.DNSSANs) > 0 {
				bad(field, "a join token is bound to its SPIFFE ID: spiffe_id_template, dns_sans and single_use do not apply")
			}
		case TypeK8sSA, TypeAWSIID, TypeGCPIIT, TypeAzureMSI, TypeAzureIMDS:
			if p.TokenTTL != 0 {
				bad(field+".token_ttl", "applies to join-token provisioners only")
			}
		default:
			bad(field+".type", "unknown provisioner type %q (want one of %s)", p.Type, strings.Join(Types, ", "))
		}
		if p.MaxTTL != 0 && (p.MaxTTL < l.MinTTL || p.MaxTTL > l.MaxTTL) {
			bad(field+".max_ttl", "%s is outside [leaf.min_ttl %s, leaf.max_ttl %s]", p.MaxTTL.Std(), l.MinTTL.Std(), l.MaxTTL.Std())
		}
		if p.DefaultTTL != 0 {
			hi := l.MaxTTL
			if p.MaxTTL != 0 {
				hi = p.MaxTTL
			}
			if p.DefaultTTL < l.MinTTL || p.DefaultTTL > hi {
				bad(field+".default_ttl", "%s is outside [%s, %s]", p.DefaultTTL.Std(), l.MinTTL.Std(), hi.Std())
			}
		}
	}
}

// validateLogging checks the log format and level.
func (c *Config) validateLogging(bad func(field, format string, args ...any)) {
	switch c.Logging.Format {
	case "", "text", "json":
	default:
		bad("logging.format", "want text or json, got %q", c.Logging.Format)
	}
	switch c.Logging.Level {
	case "", "debug", "info", "warn", "error":
	default:
		bad("logging.level", "want debug, info, warn or error, got %q", c.Logging.Level)
	}
}

// validateKeys checks the KMS URI and that KMS key references have one.
func (c *Config) validateKeys(bad func(field, format string, args ...any)) {
	if c.Keys.KMS != "" && !isKMSURI(c.Keys.KMS) {
		bad("keys.kms", "want a pkcs11: URI, got %q", c.Keys.KMS)
	}
	for _, k := range []struct{ field, ref string }{{"keys.root", c.Keys.Root}, {"keys.issuing", c.Keys.Issuing},
		{"keys.ocsp", c.Keys.OCSP}, {"keys.log", c.Keys.Log}, {"keys.token", c.Keys.Token}} {
		if isKMSURI(k.ref) && c.Keys.KMS == "" {
			bad(k.field, "%q is a KMS key but keys.kms is not set", k.ref)
		}
	}
}

func optionNames(raw json.RawMessage) string {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(raw, &m)
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// TTLs returns the default and maximum lifetime for provisioner p, falling
// back to the CA-wide leaf policy.
func (c *Config) TTLs(p Provisioner) (def, max time.Duration) {
	def, max = c.Leaf.DefaultTTL.Std(), c.Leaf.MaxTTL.Std()
	if p.MaxTTL != 0 {
		max = p.MaxTTL.Std()
	}
	if p.DefaultTTL != 0 {
		def = p.DefaultTTL.Std()
	}
	if def > max {
		def = max
	}
	return def, max
}

// validateEtcd checks the etcd settings of storage.
func (s *Storage) validateEtcd(bad func(field, format string, args ...any)) {
	if s.Path != "" {
		bad("storage.path", "not used with etcd (the state is in the cluster)")
	}
	if len(s.Endpoints) == 0 {
		bad("storage.endpoints", "at least one etcd client URL is required")
	}
	for _, e := range s.Endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("storage.endpoints", "want http(s)://host:port, got %q", e)
		}
	}
	if p := s.Prefix; !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || len(p) > 256 || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r > '~' }) {
		bad("storage.prefix", "want /name (printable ASCII, starting with a slash, not ending with one), got %q", p)
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		bad("storage.cert_file", "cert_file and key_file go together")
	}
	if (s.Username == "") != (s.PasswordFile == "") {
		bad("storage.username", "username and password_file go together")
	}
	if t := s.RequestTimeout.Std(); t != 0 && (t < 100*time.Millisecond || t > 5*time.Minute) {
		bad("storage.request_timeout", "must be between 100ms and 5m")
	}
	if t := s.AttemptTimeout.Std(); t != 0 && (t < 50*time.Millisecond || t > 5*time.Minute) {
		bad("storage.attempt_timeout", "must be between 50ms and 5m")
	}
	if s.MaxTxnOps != 0 && (s.MaxTxnOps < 96 || s.MaxTxnOps > 1<<20) {
		bad("storage.max_txn_ops", "must be between 96 and 1048576 (the cluster's --max-txn-ops; one issuance may need 96 operations in a transaction)")
	}
}
