package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Federation profiles (SPIFFE Federation specification, §5).
const (
	ProfileHTTPSSPIFFE = "https_spiffe"
	ProfileHTTPSWeb    = "https_web"
)

// Refresh bounds of a foreign bundle: its spiffe_refresh_hint (or
// DefaultFederationRefresh without one) is kept within [refresh_min,
// refresh_max], which themselves lie within [MinFederationRefresh,
// MaxFederationRefresh].
const (
	DefaultFederationRefresh    = 5 * time.Minute
	DefaultFederationRefreshMin = 30 * time.Second
	DefaultFederationRefreshMax = time.Hour
	MinFederationRefresh        = time.Second
	MaxFederationRefresh        = 24 * time.Hour
	// MaxFederatedTrustDomains bounds the federation list.
	MaxFederatedTrustDomains = 64
)

// Federation is one foreign trust domain this CA trusts (SPIFFE
// federation, docs/federation.md): where its bundle endpoint is and how
// to authenticate it.
type Federation struct {
	// TrustDomain is the foreign trust domain ("b.example").
	TrustDomain string `json:"trust_domain"`
	// BundleEndpointURL is its bundle endpoint, an https URL
	// ("https://ca.b.example:8443/v1/bundle").
	BundleEndpointURL string `json:"bundle_endpoint_url"`
	// Profile is https_spiffe or https_web.
	Profile string `json:"profile"`
	// EndpointSPIFFEID is the SPIFFE ID the endpoint's server certificate
	// must carry (https_spiffe only; required there), a member of
	// TrustDomain ("spiffe://b.example/agentca/server").
	EndpointSPIFFEID string `json:"endpoint_spiffe_id,omitempty"`
	// BootstrapBundle is a file holding the foreign trust domain's SPIFFE
	// bundle (JSON), relative to the state directory unless absolute:
	// trusted until the first fetch, and what the first https_spiffe
	// fetch is authenticated with. Required for https_spiffe.
	BootstrapBundle string `json:"bootstrap_bundle,omitempty"`
	// WebRootsFile (https_web only) is a PEM file of the CA certificates
	// that verify the endpoint's server certificate instead of the
	// system's Web PKI roots.
	WebRootsFile string `json:"web_roots_file,omitempty"`
	// RefreshMin and RefreshMax bound the time between fetches (the
	// bundle's spiffe_refresh_hint, or 5m without one); default 30s and
	// 1h.
	RefreshMin Duration `json:"refresh_min,omitempty"`
	RefreshMax Duration `json:"refresh_max,omitempty"`
}

// RefreshBounds returns the entry's refresh bounds, defaults applied.
func (f Federation) RefreshBounds() (lo, hi time.Duration) {
	lo, hi = f.RefreshMin.Std(), f.RefreshMax.Std()
	if hi == 0 {
		hi = DefaultFederationRefreshMax
	}
	if lo == 0 {
		lo = min(DefaultFederationRefreshMin, hi)
	}
	return lo, hi
}

func (c *Config) validateFederation(bad func(field, format string, args ...any)) {
	if len(c.Federation) > MaxFederatedTrustDomains {
		bad("federation", "%d trust domains; at most %d", len(c.Federation), MaxFederatedTrustDomains)
		return
	}
	seen := map[string]bool{}
	for i, f := range c.Federation {
		field := fmt.Sprintf("federation[%d]", i)
		td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
		switch {
		case err != nil || identity.ValidateTrustDomain(f.TrustDomain) != nil || strings.HasPrefix(f.TrustDomain, "spiffe://"):
			bad(field+".trust_domain", "%q is not a trust domain name", f.TrustDomain)
		case f.TrustDomain == c.TrustDomain:
			bad(field+".trust_domain", "%q is this CA's own trust domain", f.TrustDomain)
		case seen[f.TrustDomain]:
			bad(field+".trust_domain", "%q is listed twice", f.TrustDomain)
		}
		seen[f.TrustDomain] = true
		if u, err := url.Parse(f.BundleEndpointURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
			u.Fragment != "" || strings.ContainsAny(f.BundleEndpointURL, " \t\r\n#") || len(f.BundleEndpointURL) > 2048 {
			bad(field+".bundle_endpoint_url", "%q is not an https URL without user or fragment", f.BundleEndpointURL)
		}
		switch f.Profile {
		case ProfileHTTPSSPIFFE:
			id, err := spiffeid.FromString(f.EndpointSPIFFEID)
			if err != nil {
				bad(field+".endpoint_spiffe_id", "%q is not a SPIFFE ID: %v", f.EndpointSPIFFEID, err)
			} else if td.Name() != "" && !id.MemberOf(td) {
				bad(field+".endpoint_spiffe_id", "%q is not in trust domain %q, whose bundle authenticates the endpoint", f.EndpointSPIFFEID, f.TrustDomain)
			}
			if f.BootstrapBundle == "" {
				bad(field+".bootstrap_bundle", "required with profile https_spiffe: the first fetch is authenticated with it")
			}
			if f.WebRootsFile != "" {
				bad(field+".web_roots_file", "applies to profile https_web only")
			}
		case ProfileHTTPSWeb:
			if f.EndpointSPIFFEID != "" {
				bad(field+".endpoint_spiffe_id", "applies to profile https_spiffe only")
			}
		default:
			bad(field+".profile", "%q: want https_spiffe or https_web", f.Profile)
		}
		for name, p := range map[string]string{"bootstrap_bundle": f.BootstrapBundle, "web_roots_file": f.WebRootsFile} {
			if strings.ContainsRune(p, 0) || len(p) > 4096 {
				bad(field+"."+name, "not a file name")
			}
		}
		for name, v := range map[string]time.Duration{"refresh_min": f.RefreshMin.Std(), "refresh_max": f.RefreshMax.Std()} {
			if v != 0 && (v < MinFederationRefresh || v > MaxFederationRefresh) {
				bad(field+"."+name, "%s is outside [1s, 24h]", v)
			}
		}
		if lo, hi := f.RefreshMin.Std(), f.RefreshMax.Std(); lo != 0 && hi != 0 && lo > hi {
			bad(field+".refresh_min", "%s is above refresh_max %s", lo, hi)
		}
	}
}
