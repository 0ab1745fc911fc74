package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
)

func withJWTSVID(section string) string {
	return strings.TrimSuffix(minimal, "}") + `, "jwt_svid": ` + section + `}`
}

func TestJWTSVIDConfig(t *testing.T) {
	c, err := config.Parse([]byte(withJWTSVID(`{"issuer": "https://oidc.example.org/", "default_ttl": "2m", "max_ttl": "10m"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if def, max := c.JWTSVID.TTLs(); def != 2*time.Minute || max != 10*time.Minute {
		t.Errorf("TTLs = %s, %s", def, max)
	}
	if got := c.JWTIssuer(); got != "https://oidc.example.org" {
		t.Errorf("issuer %q", got)
	}
	c, err = config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if def, max := c.JWTSVID.TTLs(); def != 5*time.Minute || max != time.Hour {
		t.Errorf("default TTLs = %s, %s", def, max)
	}
	if got := c.JWTIssuer(); got != strings.TrimSuffix(c.PublicURLs.HTTPS, "/") || got == "" {
		t.Errorf("default issuer %q, want public_urls.https %q", got, c.PublicURLs.HTTPS)
	}
	for _, tc := range []struct{ section, want string }{
		{`{"issuer": "http://oidc.example.org"}`, "jwt_svid.issuer"},
		{`{"issuer": "https://oidc.example.org/?x=1"}`, "jwt_svid.issuer"},
		{`{"issuer": "https://u@oidc.example.org"}`, "jwt_svid.issuer"},
		{`{"issuer": "oidc.example.org"}`, "jwt_svid.issuer"},
		{`{"default_ttl": "2h"}`, "jwt_svid.default_ttl"},
		{`{"max_ttl": "48h"}`, "jwt_svid.max_ttl"},
		{`{"max_ttl": "1m", "default_ttl": "5m"}`, "jwt_svid.default_ttl"},
		{`{"audience": "x"}`, "unknown field"},
	} {
		if _, err := config.Parse([]byte(withJWTSVID(tc.section))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %s", tc.section, err, tc.want)
		}
	}
}
