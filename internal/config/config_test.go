package config_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/internal/config"
)

// specSubset is SPEC.md's agentca.json example without the part this
// code does not implement yet (the k8s-sa provisioner).
const specSubset = `{
  "trust_domain": "example.org",
  "listen": {"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"},
  "public_urls": {"https": "https://127.0.0.1:8443", "http": "http://127.0.0.1:8080"},
  "server_dns_names": ["localhost"],
  "storage": {"type": "bbolt", "path": "agentca.db"},
  "leaf": {"default_ttl": "5m", "max_ttl": "1h"},
  "ocsp": {"validity": "5m"},
  "crl": {"validity": "10m"},
  "admins": ["spiffe://example.org/admin/ops"],
  "provisioners": [
    {"type": "join-token", "name": "join"}
  ]
}`

// minimal is the smallest configuration Parse accepts.
const minimal = `{"trust_domain": "example.org",
  "listen": {"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"},
  "provisioners": [{"type": "join-token", "name": "join"}]}`

func TestParseSpecExample(t *testing.T) {
	c, err := config.Parse([]byte(specSubset))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		field     string
		got, want any
	}{
		{"trust_domain", c.TrustDomain, "example.org"},
		{"listen", c.Listen, config.Listen{HTTPS: "127.0.0.1:8443", HTTP: "127.0.0.1:8080"}},
		{"public_urls", c.PublicURLs, config.PublicURLs{HTTPS: "https://127.0.0.1:8443", HTTP: "http://127.0.0.1:8080"}},
		{"server_dns_names", strings.Join(c.ServerDNSNames, ","), "localhost"},
		{"storage", c.Storage, config.Storage{Type: "bbolt", Path: "agentca.db"}},
		{"leaf.default_ttl", c.Leaf.DefaultTTL.Std(), 5 * time.Minute},
		{"leaf.max_ttl", c.Leaf.MaxTTL.Std(), time.Hour},
		{"leaf.min_ttl (default)", c.Leaf.MinTTL.Std(), time.Minute},
		{"ocsp.validity", c.OCSP.Validity.Std(), 5 * time.Minute},
		{"crl.validity", c.CRL.Validity.Std(), 10 * time.Minute},
		{"admins", strings.Join(c.Admins, ","), "spiffe://example.org/admin/ops"},
		{"provisioners", len(c.Provisioners), 1},
		{"provisioners[0].type", c.Provisioners[0].Type, config.TypeJoinToken},
		{"provisioners[0].name", c.Provisioners[0].Name, "join"},
		{"provisioners[0].token_ttl (default)", c.Provisioners[0].TokenTTL.Std(), 15 * time.Minute},
		{"key_type (default)", c.KeyType, "ec-p256"},
	}
	for _, ch := range checks {
		t.Run(ch.field, func(t *testing.T) {
			if !reflect.DeepEqual(ch.got, ch.want) {
				t.Fatalf("%s = %v, want %v", ch.field, ch.got, ch.want)
			}
		})
	}
	def, max := c.TTLs(c.Provisioners[0])
	if def != 5*time.Minute || max != time.Hour {
		t.Fatalf("TTLs = %s, %s; want 5m, 1h", def, max)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"leaf.default_ttl", c.Leaf.DefaultTTL.Std(), identity.DefaultLeafTTL},
		{"leaf.max_ttl", c.Leaf.MaxTTL.Std(), identity.DefaultMaxTTL},
		{"leaf.min_ttl", c.Leaf.MinTTL.Std(), identity.DefaultMinTTL},
		{"storage.type", c.Storage.Type, "bbolt"},
		{"storage.path", c.Storage.Path, "agentca.db"},
		{"storage.retention", c.Storage.RetentionOrDefault(), config.DefaultRetention},
		{"key_type", c.KeyType, "ec-p256"},
		{"public_urls.https", c.PublicURLs.HTTPS, "https://127.0.0.1:8443"},
		{"public_urls.http", c.PublicURLs.HTTP, "http://127.0.0.1:8080"},
		{"provisioners[0].token_ttl", c.Provisioners[0].TokenTTL.Std(), identity.DefaultTokenTTL},
		{"provisioners[0].default_ttl", c.Provisioners[0].DefaultTTL.Std(), time.Duration(0)},
		{"logging.format", c.Logging.Format, ""},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			if ch.got != ch.want {
				t.Fatalf("%s = %v, want %v", ch.name, ch.got, ch.want)
			}
		})
	}
	if identity.DefaultLeafTTL != 5*time.Minute || identity.DefaultTokenTTL != 15*time.Minute || identity.Ceiling != 24*time.Hour {
		t.Fatal("the defaults differ from SPEC.md (5m leaf, 15m join token, 24h ceiling)")
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		field string // expected in the error message
	}{
		{"unknown top-level field", strings.Replace(minimal, `"trust_domain"`, `"ocsp_stapling": true, "trust_domain"`, 1), "ocsp_stapling"},
		{"unknown field in ocsp", strings.Replace(minimal, `"trust_domain"`, `"ocsp": {"validity": "5m", "url": "x"}, "trust_domain"`, 1), "url"},
		{"unknown nested field", strings.Replace(minimal, `"name": "join"`, `"name": "join", "issuer": "x"`, 1), "issuer"},
		{"misspelt field", strings.Replace(minimal, `"trust_domain"`, `"trustdomain"`, 1), "trustdomain"},
		{"trailing data", minimal + `{}`, "trailing"},
		{"not JSON", `trust_domain: example.org`, "invalid character"},
		{"truncated", minimal[:40], "EOF"},
		{"empty", ``, "EOF"},
		{"array", `[]`, "array"},
		{"wrong type", strings.Replace(minimal, `"example.org"`, `42`, 1), "trust_domain"},
		{"duration as number", strings.Replace(minimal, `"trust_domain"`, `"leaf": {"default_ttl": 300}, "trust_domain"`, 1), "duration"},
		{"duration without unit", strings.Replace(minimal, `"trust_domain"`, `"leaf": {"max_ttl": "300"}, "trust_domain"`, 1), "300"},
		{"duration in words", strings.Replace(minimal, `"trust_domain"`, `"leaf": {"max_ttl": "5 minutes"}, "trust_domain"`, 1), "5 minutes"},
		{"empty duration", strings.Replace(minimal, `"name": "join"`, `"name": "join", "token_ttl": ""`, 1), "duration"},
		{"duration null-ish", strings.Replace(minimal, `"name": "join"`, `"name": "join", "max_ttl": {}`, 1), "duration"},
		{"negative leaf ttl", strings.Replace(minimal, `"trust_domain"`, `"leaf": {"default_ttl": "-5m"}, "trust_domain"`, 1), "leaf.default_ttl"},
		{"invalid after defaults", strings.Replace(minimal, `"example.org"`, `"Example.org"`, 1), "trust_domain"},
		{"unknown provisioner type", strings.Replace(minimal, `"join-token"`, `"k8s-psat"`, 1), "provisioners[0].type"},
		{"join-token with a foreign field", strings.Replace(minimal, `"name": "join"`, `"name": "join", "audience": "x"`, 1), "provisioners[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tt.in, c)
			}
			if c != nil {
				t.Fatal("Parse returned a config with an error")
			}
			if !strings.HasPrefix(err.Error(), "config: ") || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not start with \"config: \" and name %q", err, tt.field)
			}
		})
	}
}

// validConfig is a configuration that passes Validate; tests change one
// field at a time.
func validConfig() *config.Config {
	c := config.Default("example.org", "127.0.0.1:8443", "127.0.0.1:8080")
	c.Admins = []string{"spiffe://example.org/admin/ops"}
	c.Provisioners[0].TokenTTL = config.Duration(15 * time.Minute)
	return c
}

func TestValidateNamesField(t *testing.T) {
	d := func(s string) config.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		return config.Duration(v)
	}
	tests := []struct {
		field string
		edit  func(*config.Config)
	}{
		{"trust_domain", func(c *config.Config) { c.TrustDomain = "" }},
		{"trust_domain", func(c *config.Config) { c.TrustDomain = "spiffe://example.org" }},
		{"trust_domain", func(c *config.Config) { c.TrustDomain = "exa mple.org" }},
		{"listen.https", func(c *config.Config) { c.Listen.HTTPS = "localhost" }},
		{"listen.http", func(c *config.Config) { c.Listen.HTTP = "" }},
		{"public_urls.https", func(c *config.Config) { c.PublicURLs.HTTPS = "ftp://127.0.0.1:8443" }},
		{"public_urls.https", func(c *config.Config) { c.PublicURLs.HTTPS = "/relative" }},
		{"public_urls.http", func(c *config.Config) { c.PublicURLs.HTTP = "" }},
		{"storage.type", func(c *config.Config) { c.Storage.Type = "consul" }},
		{"storage.retention", func(c *config.Config) { c.Storage.Retention = d("30s") }},
		{"storage.retention", func(c *config.Config) { c.Storage.Retention = d("-1h") }},
		{"leaf.min_ttl", func(c *config.Config) { c.Leaf.MinTTL = d("500ms") }},
		{"leaf.max_ttl", func(c *config.Config) { c.Leaf.MaxTTL = d("25h"); c.Leaf.DefaultTTL = d("5m") }},
		{"leaf.max_ttl", func(c *config.Config) { c.Leaf.MaxTTL = d("30s"); c.Leaf.MinTTL = d("1m"); c.Leaf.DefaultTTL = d("1m") }},
		{"leaf.default_ttl", func(c *config.Config) { c.Leaf.DefaultTTL = d("2h") }},
		{"leaf.default_ttl", func(c *config.Config) { c.Leaf.DefaultTTL = d("30s") }},
		{"admins[0]", func(c *config.Config) { c.Admins = []string{"spiffe://other.org/admin"} }},
		{"admins[1]", func(c *config.Config) { c.Admins = append(c.Admins, "not a spiffe id") }},
		{"provisioners", func(c *config.Config) { c.Provisioners = nil }},
		{"provisioners[0].name", func(c *config.Config) { c.Provisioners[0].Name = "" }},
		{"provisioners[0].name", func(c *config.Config) { c.Provisioners[0].Name = "agentca-server" }},
		{"provisioners[1].name", func(c *config.Config) { c.Provisioners = append(c.Provisioners, c.Provisioners[0]) }},
		{"provisioners[0].type", func(c *config.Config) { c.Provisioners[0].Type = "magic" }},
		{"provisioners[0].token_ttl", func(c *config.Config) { c.Provisioners[0].TokenTTL = d("-1m") }},
		{"provisioners[0].max_ttl", func(c *config.Config) { c.Provisioners[0].MaxTTL = d("2h") }},
		{"provisioners[0].max_ttl", func(c *config.Config) { c.Provisioners[0].MaxTTL = d("30s") }},
		{"provisioners[0].default_ttl", func(c *config.Config) {
			c.Provisioners[0].MaxTTL = d("10m")
			c.Provisioners[0].DefaultTTL = d("30m")
		}},
		{"provisioners[0].default_ttl", func(c *config.Config) { c.Provisioners[0].DefaultTTL = d("10s") }},
		{"ocsp.validity", func(c *config.Config) { c.OCSP.Validity = d("500ms") }},
		{"ocsp.validity", func(c *config.Config) { c.OCSP.Validity = d("200h") }},
		{"ocsp.responder_ttl", func(c *config.Config) { c.OCSP.ResponderTTL = d("30s") }},
		{"crl.validity", func(c *config.Config) { c.CRL.Validity = d("-1m") }},
		{"logging.format", func(c *config.Config) { c.Logging.Format = "xml" }},
		{"logging.level", func(c *config.Config) { c.Logging.Level = "trace" }},
	}
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("the base config does not validate: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			c := validConfig()
			tt.edit(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate accepted a bad %s", tt.field)
			}
			if !strings.Contains(err.Error(), "config: "+tt.field+": ") {
				t.Fatalf("Validate error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	c := validConfig()
	c.TrustDomain = ""
	c.Logging.Level = "loud"
	c.Storage.Type = "sqlite"
	err := c.Validate()
	for _, f := range []string{"trust_domain", "logging.level", "storage.type"} {
		if err == nil || !strings.Contains(err.Error(), "config: "+f+": ") {
			t.Errorf("Validate = %v, want it to name %s", err, f)
		}
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config.Config)
	}{
		{"max_ttl at the ceiling", func(c *config.Config) { c.Leaf.MaxTTL = config.Duration(identity.Ceiling) }},
		{"min_ttl of one second", func(c *config.Config) { c.Leaf.MinTTL = config.Duration(time.Second) }},
		{"default equals max", func(c *config.Config) { c.Leaf.DefaultTTL = c.Leaf.MaxTTL }},
		{"provisioner limits", func(c *config.Config) {
			c.Provisioners[0].MaxTTL = config.Duration(30 * time.Minute)
			c.Provisioners[0].DefaultTTL = config.Duration(30 * time.Minute)
		}},
		{"json logging", func(c *config.Config) { c.Logging = config.LogConfig{Format: "json", Level: "warn"} }},
		{"IPv6 listener", func(c *config.Config) { c.Listen.HTTPS = "[::1]:8443" }},
		{"no admins", func(c *config.Config) { c.Admins = nil }},
		{"two join-token provisioners", func(c *config.Config) {
			c.Provisioners = append(c.Provisioners, config.Provisioner{Type: config.TypeJoinToken, Name: "join2"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTTLs(t *testing.T) {
	c := validConfig() // leaf 5m default, 1h max
	tests := []struct {
		name     string
		p        config.Provisioner
		def, max time.Duration
	}{
		{"leaf policy", config.Provisioner{}, 5 * time.Minute, time.Hour},
		{"own max", config.Provisioner{MaxTTL: config.Duration(30 * time.Minute)}, 5 * time.Minute, 30 * time.Minute},
		{"own default", config.Provisioner{DefaultTTL: config.Duration(20 * time.Minute)}, 20 * time.Minute, time.Hour},
		{"default above own max", config.Provisioner{MaxTTL: config.Duration(2 * time.Minute)}, 2 * time.Minute, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def, max := c.TTLs(tt.p)
			if def != tt.def || max != tt.max {
				t.Fatalf("TTLs = %s, %s; want %s, %s", def, max, tt.def, tt.max)
			}
		})
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		d    time.Duration
		json string
	}{
		{5 * time.Minute, `"5m"`},
		{time.Hour, `"1h"`},
		{90 * time.Minute, `"1h30m"`},
		{90 * time.Second, `"1m30s"`},
		{24 * time.Hour, `"24h"`},
		{time.Hour + time.Second, `"1h0m1s"`},
		{1500 * time.Millisecond, `"1.5s"`},
		{0, `"0s"`},
		{-5 * time.Minute, `"-5m"`},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			b, err := json.Marshal(config.Duration(tt.d))
			if err != nil || string(b) != tt.json {
				t.Fatalf("Marshal(%s) = %s, %v; want %s", tt.d, b, err, tt.json)
			}
			var back config.Duration
			if err := json.Unmarshal(b, &back); err != nil || back.Std() != tt.d {
				t.Fatalf("Unmarshal(%s) = %s, %v; want %s", b, back.Std(), err, tt.d)
			}
		})
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	full := strings.Replace(specSubset, `{"type": "join-token", "name": "join"}`,
		`{"type": "join-token", "name": "join", "default_ttl": "10m", "max_ttl": "30m", "token_ttl": "1h30m"},
    {"type": "join-token", "name": "ci", "token_ttl": "90s"}`, 1)
	full = strings.Replace(full, `"admins"`, `"key_type": "ed25519", "logging": {"format": "json", "level": "debug"}, "admins"`, 1)
	for _, tt := range []struct{ name, in string }{
		{"spec subset", specSubset},
		{"minimal", minimal},
		{"every field", full},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c1, err := config.Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			b, err := c1.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			c2, err := config.Parse(b)
			if err != nil {
				t.Fatalf("Parse(Marshal(c)): %v\n%s", err, b)
			}
			if !reflect.DeepEqual(c1, c2) {
				t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", c1, c2, b)
			}
			if !strings.HasSuffix(string(b), "}\n") {
				t.Error("Marshal output does not end with a newline")
			}
		})
	}
	t.Run("Default", func(t *testing.T) {
		c := config.Default("example.org", "127.0.0.1:8443", "127.0.0.1:8080")
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := config.Parse(b)
		if err != nil {
			t.Fatalf("the config init writes does not parse: %v\n%s", err, b)
		}
		c.Provisioners[0].TokenTTL = config.Duration(identity.DefaultTokenTTL) // applied by Parse
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the default config:\n%+v\n%+v", c, c2)
		}
	})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, config.FileName)
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil || c.TrustDomain != "example.org" {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if _, err := config.Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file = %v, want ErrNotExist", err)
	}
}

func TestProvisionerOptionsRoundTrip(t *testing.T) {
	in := strings.Replace(minimal, `{"type": "join-token", "name": "join"}`,
		`{"type": "k8s-sa", "name": "k8s", "issuer": "https://kubernetes.default.svc", "audience": "agentca",
		  "namespaces": ["agents"], "max_ttl": "15m", "spiffe_id_template": "spiffe://{{.trust_domain}}/ns/{{.namespace}}"}`, 1)
	c, err := config.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Provisioners[0]
	if p.MaxTTL.Std() != 15*time.Minute || p.SPIFFEIDTemplate == "" {
		t.Fatalf("common fields lost: %+v", p)
	}
	var opts map[string]any
	if err := json.Unmarshal(p.Options, &opts); err != nil || opts["audience"] != "agentca" || len(opts) != 3 || opts["max_ttl"] != nil {
		t.Fatalf("Options = %s, %v; want issuer, audience, namespaces only", p.Options, err)
	}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := config.Parse(b)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, b)
	}
	if string(again.Provisioners[0].Options) != string(p.Options) {
		t.Fatalf("Options after round trip = %s, want %s", again.Provisioners[0].Options, p.Options)
	}
}
