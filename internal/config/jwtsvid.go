package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
)

// JWTSVID configures JWT-SVIDs (POST /v1/jwt-svid) and OIDC discovery
// (docs/jwt-svid.md). Zero values mean the defaults.
type JWTSVID struct {
	// Issuer is the JWT-SVIDs' "iss" and the OIDC discovery issuer, an
	// https URL; default public_urls.https.
	Issuer string `json:"issuer,omitempty"`
	// DefaultTTL is a JWT-SVID's lifetime when the request names none;
	// default 5m. A JWT-SVID never outlives the caller's certificate.
	DefaultTTL Duration `json:"default_ttl,omitempty"`
	// MaxTTL bounds a requested lifetime; default 1h. It is also how long
	// a rotated-out JWT key stays published after its successor was
	// activated (retire waits for it).
	MaxTTL Duration `json:"max_ttl,omitempty"`
}

// TTLs returns the default and maximum JWT-SVID lifetimes, defaults
// applied.
func (j JWTSVID) TTLs() (def, max time.Duration) {
	def, max = j.DefaultTTL.Std(), j.MaxTTL.Std()
	if max == 0 {
		max = identity.DefaultJWTSVIDMaxTTL
	}
	if def == 0 {
		def = min(identity.DefaultJWTSVIDTTL, max)
	}
	return def, max
}

// JWTIssuer is the configured JWT-SVID issuer, or the public HTTPS URL, without a
// trailing slash.
func (c *Config) JWTIssuer() string {
	if c.JWTSVID.Issuer != "" {
		return strings.TrimSuffix(c.JWTSVID.Issuer, "/")
	}
	return strings.TrimSuffix(c.PublicURLs.HTTPS, "/")
}

func (c *Config) validateJWTSVID(bad func(field, format string, args ...any)) {
	j := c.JWTSVID
	if v := j.MaxTTL.Std(); v != 0 && (v < time.Second || v > identity.Ceiling) {
		bad("jwt_svid.max_ttl", "%s is outside [1s, 24h]", v)
	}
	_, max := j.TTLs()
	if v := j.DefaultTTL.Std(); v != 0 && (v < time.Second || v > max) {
		bad("jwt_svid.default_ttl", "%s is outside [1s, max_ttl %s]", v, max)
	}
	if j.Issuer != "" {
		u, err := url.Parse(j.Issuer)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
			strings.ContainsAny(j.Issuer, " \t\r\n?#") || len(j.Issuer) > 512 {
			bad("jwt_svid.issuer", "%q is not an https URL without query, fragment or user", j.Issuer)
		}
	}
}
