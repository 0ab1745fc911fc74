package config_test

import (
	"strings"
	"testing"

	"github.com/agentca/agentca/internal/config"
)

func TestReservedTemplate(t *testing.T) {
	for _, tt := range []struct {
		tmpl    string
		refused bool
	}{
		{"spiffe://{{.trust_domain}}/agentca/{{.namespace}}", true},
		{"spiffe://{{ .trust_domain }}/agentca/server", true},
		{"spiffe://example.org/AgentCA/{{.namespace}}", true},
		{"spiffe://example.org/agentca", true},
		{"spiffe://{{.trust_domain}}/ns/{{.namespace}}", false},
		{"spiffe://{{.trust_domain}}/agentca{{.namespace}}", false}, // refused at issuance if it renders under /agentca/
		{"spiffe://{{.trust_domain}}/agentcafoo/{{.namespace}}", false},
	} {
		in := strings.Replace(minimal, `{"type": "join-token", "name": "join"}`,
			`{"type": "k8s-sa", "name": "k8s", "issuer": "https://kubernetes.default.svc", "audience": "agentca",
			  "namespaces": ["agents"], "spiffe_id_template": "`+tt.tmpl+`"}`, 1)
		_, err := config.Parse([]byte(in))
		if got := err != nil && strings.Contains(err.Error(), "reserved for the CA's own identities"); got != tt.refused {
			t.Errorf("%s: err %v, want refused %v", tt.tmpl, err, tt.refused)
		}
	}
}

func TestValidateSPIFFEIDLength(t *testing.T) {
	id := func(n int) string {
		return "spiffe://example.org/" + strings.Repeat("a", n-len("spiffe://example.org/"))
	}
	if err := config.ValidateSPIFFEID(id(2048), "example.org"); err != nil {
		t.Fatalf("2048 bytes: %v", err)
	}
	err := config.ValidateSPIFFEID(id(2049), "example.org")
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("2049 bytes: %v", err)
	}
	if err := config.ValidateWorkloadSPIFFEID(config.ServerSPIFFEID("example.org"), "example.org"); err == nil {
		t.Fatal("the server's ID is not reserved")
	}
	if err := config.ValidateSPIFFEID(config.ServerSPIFFEID("example.org"), "example.org"); err != nil {
		t.Fatal(err)
	}
}
