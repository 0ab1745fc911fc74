package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/agentca/agentca/exchange"
)

// Exchange configures RFC 8693 token exchange at /v1/token
// (docs/delegation.md): the identity providers whose tokens may start a
// chain, and how long a chain may grow. Present (even empty) turns the
// exchange on; absent, the token-exchange grant is unsupported.
type Exchange struct {
	// Issuers are the trusted identity providers of subject tokens.
	Issuers []ExchangeIssuer `json:"issuers,omitempty"`
	// MaxChain is the most actors a delegated token's act claim may
	// nest; default 4, at most MaxExchangeChain.
	MaxChain int `json:"max_chain,omitempty"`
}

// ExchangeIssuer is one trusted identity provider.
type ExchangeIssuer struct {
	// Issuer is the tokens' "iss", an https URL, compared exactly.
	Issuer string `json:"issuer"`
	// Audience must be one of the tokens' "aud" values: the name this CA
	// has at the identity provider. Required.
	Audience string `json:"audience"`
	// JWKSFile (relative to the state directory unless absolute) or
	// JWKSURL hold the provider's keys; with neither, they are found by
	// OIDC discovery of Issuer.
	JWKSFile string `json:"jwks_file,omitempty"`
	JWKSURL  string `json:"jwks_url,omitempty"`
	// Algorithms allowed for the provider's signatures; default RS256
	// and ES256.
	Algorithms []string `json:"algorithms,omitempty"`
	// CAFile, a PEM file (relative to the state directory unless
	// absolute), replaces the system roots for the provider's JWKS URL
	// and discovery (a private identity provider).
	CAFile string `json:"ca_file,omitempty"`
}

// Exchange limits.
const (
	DefaultExchangeChain = exchange.DefaultMaxChain
	MaxExchangeChain     = 16
	maxExchangeIssuers   = 32
)

// exchangeAlgorithms are the signature algorithms an issuer may allow.
var exchangeAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Chain returns MaxChain with its default applied.
func (e *Exchange) Chain() int {
	if e == nil || e.MaxChain == 0 {
		return DefaultExchangeChain
	}
	return e.MaxChain
}

func (c *Config) validateExchange(bad func(field, format string, args ...any)) {
	e := c.Tokens.Exchange
	if e == nil {
		return
	}
	if e.MaxChain < 0 || e.MaxChain > MaxExchangeChain {
		bad("tokens.exchange.max_chain", "%d is outside [1, %d]", e.MaxChain, MaxExchangeChain)
	}
	if len(e.Issuers) > maxExchangeIssuers {
		bad("tokens.exchange.issuers", "%d issuers; at most %d", len(e.Issuers), maxExchangeIssuers)
	}
	self := []string{strings.TrimSuffix(c.PublicURLs.HTTPS, "/"), c.JWTIssuer()}
	var seen []string
	for i, is := range e.Issuers {
		field := fmt.Sprintf("tokens.exchange.issuers[%d]", i)
		if err := httpsURL(is.Issuer, true); err != nil {
			bad(field+".issuer", "%q %v", is.Issuer, err)
		} else if slices.Contains(seen, is.Issuer) {
			bad(field+".issuer", "%q is listed twice", is.Issuer)
		} else if slices.Contains(self, strings.TrimSuffix(is.Issuer, "/")) {
			bad(field+".issuer", "%q is this CA's own issuer (its tokens and JWT-SVIDs are always accepted)", is.Issuer)
		}
		seen = append(seen, is.Issuer)
		if is.Audience == "" || len(is.Audience) > 512 || strings.ContainsAny(is.Audience, " \t\r\n") {
			bad(field+".audience", "required: the audience this CA has at the provider (no white space, at most 512 bytes)")
		}
		if is.JWKSFile != "" && is.JWKSURL != "" {
			bad(field, "jwks_file and jwks_url are exclusive (neither: OIDC discovery of the issuer)")
		}
		if is.JWKSURL != "" {
			if err := httpsURL(is.JWKSURL, false); err != nil {
				bad(field+".jwks_url", "%q %v", is.JWKSURL, err)
			}
		}
		if is.CAFile != "" && is.JWKSFile != "" {
			bad(field+".ca_file", "applies to jwks_url or discovery, not to jwks_file")
		}
		if is.JWKSFile != "" && strings.TrimSpace(is.JWKSFile) != is.JWKSFile {
			bad(field+".jwks_file", "%q has surrounding white space", is.JWKSFile)
		}
		for j, a := range is.Algorithms {
			if !slices.Contains(exchangeAlgorithms, a) {
				bad(fmt.Sprintf("%s.algorithms[%d]", field, j), "%q is not one of %s", a, strings.Join(exchangeAlgorithms, ", "))
			}
		}
	}
}

// httpsURL accepts an absolute https URL with a host, no user, no
// fragment and (for an issuer) no query.
func httpsURL(s string, issuer bool) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || s == "":
		return fmt.Errorf("is not a URL")
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("is not an https URL with a host")
	case u.User != nil || u.Fragment != "" || strings.ContainsAny(s, " \t\r\n#"):
		return fmt.Errorf("has user information, a fragment or white space")
	case issuer && u.RawQuery != "":
		return fmt.Errorf("has a query")
	case len(s) > 512:
		return fmt.Errorf("is longer than 512 bytes")
	}
	return nil
}
