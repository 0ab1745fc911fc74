package config_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/internal/config"
)

func TestExchange(t *testing.T) {
	c, err := config.Parse([]byte(withSections(`{"exchange": {"issuers": [
		{"issuer": "https://idp.example.org", "audience": "agentca", "jwks_url": "https://idp.example.org/keys", "algorithms": ["RS256", "EdDSA"], "ca_file": "idp.pem"},
		{"issuer": "https://login.example.com/tenant", "audience": "api://agentca"}], "max_chain": 3}}`, `{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if x := c.Tokens.Exchange; x == nil || len(x.Issuers) != 2 || x.Chain() != 3 || x.Issuers[0].CAFile != "idp.pem" {
		t.Fatalf("exchange = %+v", c.Tokens.Exchange)
	}
	if c, err = config.Parse([]byte(withSections(`{"exchange": {}}`, `{}`))); err != nil || c.Tokens.Exchange == nil || c.Tokens.Exchange.Chain() != 4 {
		t.Fatalf("an empty exchange section: %v %+v", err, c.Tokens.Exchange)
	}
	if c, _ = config.Parse([]byte(withSections(`{}`, `{}`))); c.Tokens.Exchange != nil {
		t.Fatalf("no exchange section: %+v", c.Tokens.Exchange)
	}
}

func TestExchangeRefused(t *testing.T) {
	const iss = `"issuer": "https://idp.example.org", "audience": "agentca"`
	for _, tc := range []struct{ name, exchange, want string }{
		{"chain too long", `{"max_chain": 17}`, "tokens.exchange.max_chain"},
		{"negative chain", `{"max_chain": -1}`, "tokens.exchange.max_chain"},
		{"http issuer", `{"issuers": [{"issuer": "http://idp.example.org", "audience": "a"}]}`, "tokens.exchange.issuers[0].issuer"},
		{"issuer with a query", `{"issuers": [{"issuer": "https://idp.example.org/?x=1", "audience": "a"}]}`, "tokens.exchange.issuers[0].issuer"},
		{"issuer twice", `{"issuers": [{` + iss + `}, {` + iss + `}]}`, "tokens.exchange.issuers[1].issuer"},
		{"the CA itself", `{"issuers": [{"issuer": "https://127.0.0.1:8443", "audience": "a"}]}`, "this CA's own issuer"},
		{"no audience", `{"issuers": [{"issuer": "https://idp.example.org"}]}`, "tokens.exchange.issuers[0].audience"},
		{"file and URL", `{"issuers": [{` + iss + `, "jwks_file": "k.json", "jwks_url": "https://idp.example.org/k"}]}`, "exclusive"},
		{"http JWKS", `{"issuers": [{` + iss + `, "jwks_url": "http://idp.example.org/k"}]}`, "tokens.exchange.issuers[0].jwks_url"},
		{"HMAC", `{"issuers": [{` + iss + `, "algorithms": ["HS256"]}]}`, "tokens.exchange.issuers[0].algorithms[0]"},
		{"none", `{"issuers": [{` + iss + `, "algorithms": ["none"]}]}`, "tokens.exchange.issuers[0].algorithms[0]"},
		{"CA file with a JWKS file", `{"issuers": [{` + iss + `, "jwks_file": "k.json", "ca_file": "c.pem"}]}`, "ca_file"},
		{"unknown field", `{"issuers": [{` + iss + `, "jwks": "k.json"}]}`, "unknown field"},
		{"unknown exchange field", `{"max_depth": 3}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(withSections(`{"exchange": `+tc.exchange+`}`, `{}`)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
