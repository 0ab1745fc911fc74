package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
)

// Tokens configures the OAuth 2.0 token endpoint (docs/tokens.md). Zero
// values mean the defaults.
type Tokens struct {
	// DefaultTTL is a token's lifetime when the request names none;
	// default 5m. A token never outlives its client certificate.
	DefaultTTL Duration `json:"default_ttl,omitempty"`
	// MaxTTL bounds the lifetime a request may ask for (ttl); default 1h.
	MaxTTL Duration `json:"max_ttl,omitempty"`
	// Scopes are the scopes tokens may carry; a request for any other is
	// invalid_scope. Empty: no token can be issued.
	Scopes []string `json:"scopes,omitempty"`
	// Audiences are the resources (RFC 8707) and audiences tokens may
	// name; empty means any https URL or SPIFFE ID in the trust domain.
	Audiences []string `json:"audiences,omitempty"`
	// PreviousKeys are PEM files of ECDSA P-256 public keys published in
	// the JWKS beside the token key (relative to the state directory
	// unless absolute), so that tokens signed with a key being rotated
	// out (or, during an HA rollout, in) keep verifying. They sign
	// nothing.
	PreviousKeys []string `json:"previous_keys,omitempty"`
	// Exchange turns on RFC 8693 token exchange (exchange.go).
	Exchange *Exchange `json:"exchange,omitempty"`
}

// TTLs returns the default and maximum token lifetimes, defaults applied.
func (t Tokens) TTLs() (def, max time.Duration) {
	def, max = t.DefaultTTL.Std(), t.MaxTTL.Std()
	if max == 0 {
		max = identity.DefaultAccessTokenMaxTTL
	}
	if def == 0 {
		def = min(identity.DefaultAccessTokenTTL, max)
	}
	return def, max
}

// Policy configures the runtime policy (docs/policy.md).
type Policy struct {
	// File is the policy file (JSON rules), relative to the state
	// directory unless absolute; empty means no rules.
	File string `json:"file,omitempty"`
	// Default is the effect when no rule matches: "allow" (the default)
	// or "deny".
	Default string `json:"default,omitempty"`
	// Environment are key/values rules see as environment (beside the
	// per-request "remote_ip").
	Environment map[string]string `json:"environment,omitempty"`
}

// DefaultEffect returns Default, or "allow" when unset.
func (p Policy) DefaultEffect() string {
	if p.Default == "" {
		return "allow"
	}
	return p.Default
}

func (c *Config) validateTokens(bad func(field, format string, args ...any)) {
	t := c.Tokens
	if v := t.MaxTTL.Std(); v != 0 && (v < time.Second || v > identity.Ceiling) {
		bad("tokens.max_ttl", "%s is outside [1s, 24h]", v)
	}
	def, max := t.TTLs()
	if v := t.DefaultTTL.Std(); v != 0 && (v < time.Second || v > max) {
		bad("tokens.default_ttl", "%s is outside [1s, max_ttl %s]", v, max)
	}
	_ = def
	for i, s := range t.Scopes {
		if !validScope(s) {
			bad(fmt.Sprintf("tokens.scopes[%d]", i), "%q is not an RFC 6749 scope token (printable ASCII, no space, '\"' or '\\', at most 128 bytes)", s)
		} else if slices.Index(t.Scopes, s) != i {
			bad(fmt.Sprintf("tokens.scopes[%d]", i), "duplicate scope %q", s)
		}
	}
	for i, a := range t.Audiences {
		field := fmt.Sprintf("tokens.audiences[%d]", i)
		if strings.HasPrefix(a, "spiffe://") {
			if err := identity.ValidateSPIFFEID(a, c.TrustDomain); err != nil {
				bad(field, "%v", err)
			}
			continue
		}
		u, err := url.Parse(a)
		if err != nil || !u.IsAbs() || u.Fragment != "" || strings.ContainsAny(a, " \t\r\n#") || len(a) > 512 {
			bad(field, "%q is not an absolute URI without a fragment (or a SPIFFE ID)", a)
		}
	}
	for i, k := range t.PreviousKeys {
		if strings.TrimSpace(k) == "" || slices.Index(t.PreviousKeys, k) != i {
			bad(fmt.Sprintf("tokens.previous_keys[%d]", i), "%q is empty or repeated", k)
		}
	}
	p := c.Policy
	switch p.Default {
	case "", "allow":
	case "deny":
		if p.File == "" {
			bad("policy.default", "deny without policy.file would refuse every request")
		}
	default:
		bad("policy.default", "want allow or deny, got %q", p.Default)
	}
	for k := range p.Environment {
		if k == "" || k == "remote_ip" {
			bad("policy.environment", "key %q is empty or reserved", k)
		}
	}
}

// validScope: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), RFC 6749 §3.3.
func validScope(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}
