package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
)

func withFederation(list string) string {
	return strings.TrimSuffix(strings.TrimSpace(minimal), "}") + `, "federation": ` + list + `}`
}

const specFederation = `[{"trust_domain": "b.example", "bundle_endpoint_url": "https://ca.b.example:8443/v1/bundle",
  "profile": "https_spiffe", "endpoint_spiffe_id": "spiffe://b.example/agentca/server",
  "bootstrap_bundle": "b.example.bundle.json"},
 {"trust_domain": "c.example", "bundle_endpoint_url": "https://c.example/bundle", "profile": "https_web",
  "web_roots_file": "c-roots.pem", "refresh_min": "2s", "refresh_max": "10s"}]`

func TestFederationConfig(t *testing.T) {
	c, err := config.Parse([]byte(withFederation(specFederation)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Federation) != 2 || c.Federation[0].EndpointSPIFFEID != "spiffe://b.example/agentca/server" ||
		c.Federation[0].BootstrapBundle != "b.example.bundle.json" || c.Federation[1].Profile != config.ProfileHTTPSWeb {
		t.Fatalf("parsed %+v", c.Federation)
	}
	if lo, hi := c.Federation[0].RefreshBounds(); lo != 30*time.Second || hi != time.Hour {
		t.Errorf("default refresh bounds %s, %s", lo, hi)
	}
	if lo, hi := c.Federation[1].RefreshBounds(); lo != 2*time.Second || hi != 10*time.Second {
		t.Errorf("refresh bounds %s, %s", lo, hi)
	}
	if lo, _ := (config.Federation{RefreshMax: config.Duration(10 * time.Second)}).RefreshBounds(); lo != 10*time.Second {
		t.Errorf("refresh_min defaults above refresh_max: %s", lo)
	}
	spiffe := func(extra string) string {
		return `[{"trust_domain": "b.example", "bundle_endpoint_url": "https://ca.b.example/v1/bundle", "profile": "https_spiffe",
			"endpoint_spiffe_id": "spiffe://b.example/agentca/server", "bootstrap_bundle": "b.json"` + extra + `}]`
	}
	for _, tc := range []struct{ list, want string }{
		{`[{"trust_domain": "example.org", "bundle_endpoint_url": "https://x/", "profile": "https_web"}]`, "own trust domain"},
		{`[{"trust_domain": "spiffe://b.example", "bundle_endpoint_url": "https://x/", "profile": "https_web"}]`, "federation[0].trust_domain"},
		{`[{"trust_domain": "B.example", "bundle_endpoint_url": "https://x/", "profile": "https_web"}]`, "federation[0].trust_domain"},
		{`[{"trust_domain": "", "bundle_endpoint_url": "https://x/", "profile": "https_web"}]`, "federation[0].trust_domain"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/", "profile": "https_web"},
		   {"trust_domain": "b.example", "bundle_endpoint_url": "https://y/", "profile": "https_web"}]`, "listed twice"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "http://x/", "profile": "https_web"}]`, "bundle_endpoint_url"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://u@x/", "profile": "https_web"}]`, "bundle_endpoint_url"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https:///v1/bundle", "profile": "https_web"}]`, "bundle_endpoint_url"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/", "profile": "https"}]`, "federation[0].profile"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/"}]`, "federation[0].profile"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/", "profile": "https_web", "endpoint_spiffe_id": "spiffe://b.example/x"}]`, "https_spiffe only"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/", "profile": "https_spiffe", "bootstrap_bundle": "b.json"}]`, "endpoint_spiffe_id"},
		{`[{"trust_domain": "b.example", "bundle_endpoint_url": "https://x/", "profile": "https_spiffe", "endpoint_spiffe_id": "spiffe://b.example/s"}]`, "bootstrap_bundle"},
		{strings.Replace(spiffe(""), "spiffe://b.example/agentca/server", "spiffe://c.example/agentca/server", 1), "not in trust domain"},
		{spiffe(`, "web_roots_file": "r.pem"`), "https_web only"},
		{spiffe(`, "refresh_min": "100ms"`), "refresh_min"},
		{spiffe(`, "refresh_max": "48h"`), "refresh_max"},
		{spiffe(`, "refresh_min": "2m", "refresh_max": "1m"`), "above refresh_max"},
		{spiffe(`, "refresh": "1m"`), "unknown field"},
		{`{"trust_domain": "b.example"}`, "federation"},
	} {
		_, err := config.Parse([]byte(withFederation(tc.list)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.list, err, tc.want)
		}
	}
	if _, err := config.Parse([]byte(withFederation(spiffe("")))); err != nil {
		t.Errorf("a valid https_spiffe entry: %v", err)
	}
}
