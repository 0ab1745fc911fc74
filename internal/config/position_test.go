package config

import (
	"strings"
	"testing"
)

// A hand-edited agentca.json with a mistake names the line and column.
func TestParseNamesLineAndColumn(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"missing comma":  {"{\n  \"trust_domain\": \"example.org\"\n  \"listen\": {}\n}\n", "line 3, column 3"},
		"trailing comma": {"{\n  \"trust_domain\": \"example.org\",\n}\n", "line 3, column 1"},
		"wrong type":     {"{\n  \"trust_domain\": 7\n}\n", "line 2, column 19"},
		"truncated":      {"{\n  \"trust_domain\": \"example.org\"", "line 2, column 31"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want it to name %q", err, tc.want)
			}
		})
	}
	_, err := Parse([]byte(`{"leaf": {"default_ttl": "15"}}`))
	if err == nil || !strings.Contains(err.Error(), `"15m"`) {
		t.Fatalf("a bad duration: %v, want an example such as \"15m\"", err)
	}
}
