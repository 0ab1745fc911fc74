package identity_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/identity"
)

func TestValidateTrustDomain(t *testing.T) {
	tests := []struct {
		td string
		ok bool
	}{
		{"example.org", true},
		{"example", true},
		{"a-b_c.example.org", true},
		{"123.example", true},
		{"", false},
		{"Example.org", false},
		{"spiffe://example.org", false},
		{"example.org/", false},
		{"example.org:8443", false},
		{"exa mple.org", false},
		{"exämple.org", false},
		{"example.org\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.td, func(t *testing.T) {
			err := identity.ValidateTrustDomain(tt.td)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateTrustDomain(%q) = %v, want ok=%v", tt.td, err, tt.ok)
			}
		})
	}
}

func TestValidateSPIFFEID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"spiffe://example.org/agent", true},
		{"spiffe://example.org/ns/agents/sa/x", true},
		{"spiffe://example.org/a-b_c.d", true},
		{"spiffe://example.org/...", true},
		{"spiffe://example.org", false},
		{"spiffe://example.org/", false},
		{"spiffe://other.org/agent", false},
		{"spiffe://example.org.evil/agent", false},
		{"spiffe://sub.example.org/agent", false},
		{"SPIFFE://example.org/agent", false},
		{"spiffe://EXAMPLE.ORG/agent", false},
		{"https://example.org/agent", false},
		{"spiffe:/example.org/agent", false},
		{"example.org/agent", false},
		{"", false},
		{"spiffe://example.org/a//b", false},
		{"spiffe://example.org/a/", false},
		{"spiffe://example.org/./a", false},
		{"spiffe://example.org/a/..", false},
		{"spiffe://example.org/a?x=1", false},
		{"spiffe://example.org/a#f", false},
		{"spiffe://example.org:8443/a", false},
		{"spiffe://user@example.org/a", false},
		{"spiffe://example.org/a%2Fb", false},
		{"spiffe://example.org/a b", false},
		{"spiffe://example.org/ä", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := identity.ValidateSPIFFEID(tt.id, "example.org")
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateSPIFFEID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestValidateSPIFFEIDLength(t *testing.T) {
	id := func(n int) string {
		return "spiffe://example.org/" + strings.Repeat("a", n-len("spiffe://example.org/"))
	}
	if err := identity.ValidateSPIFFEID(id(2048), "example.org"); err != nil {
		t.Fatalf("2048 bytes: %v", err)
	}
	err := identity.ValidateSPIFFEID(id(2049), "example.org")
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("2049 bytes: %v", err)
	}
	if err := identity.ValidateWorkloadSPIFFEID(identity.ServerSPIFFEID("example.org"), "example.org"); err == nil {
		t.Fatal("the server's ID is not reserved")
	}
	if err := identity.ValidateSPIFFEID(identity.ServerSPIFFEID("example.org"), "example.org"); err != nil {
		t.Fatal(err)
	}
}
