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
