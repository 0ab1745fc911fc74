package provisioners

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"text/template"
)

// ErrTemplate is returned when a template cannot be rendered from the
// claims (a claim is missing); the request is refused.
var ErrTemplate = errors.New("provisioners: identity template cannot be rendered")

// Template renders a SPIFFE ID and DNS names from attested claims, with
// Go's text/template: "spiffe://{{.trust_domain}}/ns/{{.namespace}}".
// A missing claim is an error, never an empty string. The CA validates
// the result (a SPIFFE ID in its trust domain, DNS names it accepts), so a
// claim that smuggles "/.." or odd characters is refused there.
type Template struct {
	id  *template.Template
	dns []*template.Template
}

// NewTemplate parses the SPIFFE ID template and the DNS name templates.
func NewTemplate(spiffeID string, dnsNames []string) (*Template, error) {
	parse := func(name, text string) (*template.Template, error) {
		t, err := template.New(name).Option("missingkey=error").Parse(text)
		if err != nil {
			return nil, fmt.Errorf("template %q: %w", text, err)
		}
		return t, nil
	}
	id, err := parse("spiffe_id_template", spiffeID)
	if err != nil {
		return nil, err
	}
	t := &Template{id: id}
	for i, d := range dnsNames {
		dt, err := parse(fmt.Sprintf("dns_sans[%d]", i), d)
		if err != nil {
			return nil, err
		}
		t.dns = append(t.dns, dt)
	}
	return t, nil
}

// Render fills the templates with claims plus "trust_domain".
func (t *Template) Render(trustDomain string, claims map[string]string) (string, []string, error) {
	data := make(map[string]string, len(claims)+1)
	maps.Copy(data, claims)
	data["trust_domain"] = trustDomain
	exec := func(tt *template.Template) (string, error) {
		var b bytes.Buffer
		if err := tt.Execute(&b, data); err != nil {
			return "", fmt.Errorf("%w: %v", ErrTemplate, err)
		}
		return b.String(), nil
	}
	id, err := exec(t.id)
	if err != nil {
		return "", nil, err
	}
	var dns []string
	for _, dt := range t.dns {
		d, err := exec(dt)
		if err != nil {
			return "", nil, err
		}
		dns = append(dns, d)
	}
	return id, dns, nil
}
