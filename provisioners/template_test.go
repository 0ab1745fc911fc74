package provisioners_test

import (
	"errors"
	"testing"

	"github.com/agentca/agentca/provisioners"
)

func TestTemplate(t *testing.T) {
	tmpl, err := provisioners.NewTemplate("spiffe://{{.trust_domain}}/ns/{{.namespace}}/sa/{{.service_account}}",
		[]string{"{{.service_account}}.{{.namespace}}.svc"})
	if err != nil {
		t.Fatal(err)
	}
	id, dns, err := tmpl.Render("example.org", map[string]string{"namespace": "agents", "service_account": "bot"})
	if err != nil || id != "spiffe://example.org/ns/agents/sa/bot" || len(dns) != 1 || dns[0] != "bot.agents.svc" {
		t.Fatalf("Render = %q %q %v", id, dns, err)
	}
	if _, _, err := tmpl.Render("example.org", map[string]string{"namespace": "agents"}); !errors.Is(err, provisioners.ErrTemplate) {
		t.Fatalf("missing claim: err = %v, want ErrTemplate", err)
	}
	// A claim cannot override the trust domain.
	id, _, err = tmpl.Render("example.org", map[string]string{"namespace": "a", "service_account": "b", "trust_domain": "evil.org"})
	if err != nil || id != "spiffe://example.org/ns/a/sa/b" {
		t.Fatalf("trust_domain claim overrode the CA's: %q %v", id, err)
	}
	if _, err := provisioners.NewTemplate("spiffe://{{.x", nil); err == nil {
		t.Fatal("a broken template was accepted")
	}
}
