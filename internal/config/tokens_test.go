package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
)

// withSections is the minimal configuration plus tokens and policy
// objects.
func withSections(tokens, policy string) string {
	return strings.TrimSuffix(minimal, "}") + `, "tokens": ` + tokens + `, "policy": ` + policy + `}`
}

func TestTokensAndPolicy(t *testing.T) {
	c, err := config.Parse([]byte(withSections(
		`{"default_ttl": "2m", "scopes": ["tools.read", "tools:write"], "audiences": ["https://tools.example.org", "spiffe://example.org/tool"]}`,
		`{"file": "policy.json", "default": "deny", "environment": {"region": "eu"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	if def, max := c.Tokens.TTLs(); def != 2*time.Minute || max != time.Hour {
		t.Errorf("TTLs = %s, %s", def, max)
	}
	if c.Policy.DefaultEffect() != "deny" || c.Policy.Environment["region"] != "eu" {
		t.Errorf("policy = %+v", c.Policy)
	}
	if def, _ := (config.Tokens{}).TTLs(); def != 5*time.Minute {
		t.Errorf("default token lifetime %s, want 5m", def)
	}
}

func TestTokensAndPolicyRefused(t *testing.T) {
	tests := []struct{ name, tokens, policy, want string }{
		{"default above max", `{"default_ttl": "2h", "max_ttl": "1h"}`, `{}`, "tokens.default_ttl"},
		{"max above ceiling", `{"max_ttl": "48h"}`, `{}`, "tokens.max_ttl"},
		{"bad scope", `{"scopes": ["a b"]}`, `{}`, "tokens.scopes[0]"},
		{"duplicate scope", `{"scopes": ["a", "a"]}`, `{}`, "tokens.scopes[1]"},
		{"repeated previous key", `{"previous_keys": ["keys/p.pub", "keys/p.pub"]}`, `{}`, "tokens.previous_keys[1]"},
		{"empty previous key", `{"previous_keys": [""]}`, `{}`, "tokens.previous_keys[0]"},
		{"relative audience", `{"audiences": ["/tools"]}`, `{}`, "tokens.audiences[0]"},
		{"foreign SPIFFE audience", `{"audiences": ["spiffe://other.org/x"]}`, `{}`, "tokens.audiences[0]"},
		{"unknown field", `{"scope": ["a"]}`, `{}`, "unknown field"},
		{"bad default", `{}`, `{"default": "maybe"}`, "policy.default"},
		{"deny without a file", `{}`, `{"default": "deny"}`, "policy.default"},
		{"reserved environment key", `{}`, `{"file": "p.json", "environment": {"remote_ip": "x"}}`, "policy.environment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(withSections(tc.tokens, tc.policy)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
