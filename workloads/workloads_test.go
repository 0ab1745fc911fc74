package workloads

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestRender(t *testing.T) {
	d := Definition{ID: "k", SPIFFEID: "spiffe://example.org/ns/{{k8s:ns}}/sa/{{k8s:sa}}", Selectors: []string{"k8s:ns:prod"},
		NodeProvisioners: []string{"k8s"}}
	if err := d.Validate("example.org"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sel  []string
		want string
	}{
		{[]string{"k8s:ns:prod", "k8s:sa:web"}, "spiffe://example.org/ns/prod/sa/web"},
		{[]string{"k8s:ns:prod"}, ""},                            // no sa
		{[]string{"k8s:sa:web"}, ""},                             // required selector missing
		{[]string{"k8s:ns:prod", "k8s:sa:web", "k8s:sa:db"}, ""}, // two values
		{[]string{"k8s:ns:prod", "k8s:sa:../admin"}, ""},         // not a segment
		{[]string{"k8s:ns:prod", "k8s:sa:a/b"}, ""},              // two segments
		{[]string{"k8s:ns:prod", "k8s:sa:"}, ""},                 // empty
		{[]string{"k8s:ns:prod", "k8s:sa:web", "k8s:sab:x"}, "spiffe://example.org/ns/prod/sa/web"},
	} {
		got, ok := d.Render(tc.sel)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("Render(%v) = %q, %v; want %q", tc.sel, got, ok, tc.want)
		}
	}
}

func TestNodeAllowed(t *testing.T) {
	d := Definition{Nodes: []string{"spiffe://example.org/node/*", "spiffe://example.org/exact"}, NodeProvisioners: []string{"aws"}}
	for id, want := range map[string]bool{
		"spiffe://example.org/node/a":    true,
		"spiffe://example.org/node/":     false,
		"spiffe://example.org/nodes/a":   false,
		"spiffe://example.org/exact":     true,
		"spiffe://example.org/exact/sub": false,
	} {
		if got := d.NodeAllowed(id, "join"); got != want {
			t.Errorf("NodeAllowed(%s) = %v", id, got)
		}
	}
	if !d.NodeAllowed("spiffe://example.org/x", "aws") {
		t.Error("the provisioner allowance does not allow")
	}
}

// FuzzRender: whatever the template and selectors, a rendered ID is a
// SPIFFE ID of the trust domain with as many segments as the validated
// template (a selector value never adds one).
func FuzzRender(f *testing.F) {
	f.Add("spiffe://example.org/ns/{{k8s:ns}}/sa/{{k8s:sa}}", "k8s:ns:a\nk8s:sa:b")
	f.Add("spiffe://example.org/w/{{unix:uid}}", "unix:uid:0")
	f.Add("spiffe://example.org/{{a:b}}{{a:c}}", "a:b:x\na:c:y/z")
	f.Fuzz(func(t *testing.T, tmpl, sels string) {
		d := Definition{ID: "f", SPIFFEID: tmpl, Selectors: []string{"x:y:z"}, NodeProvisioners: []string{"p"}}
		if d.Validate("example.org") != nil {
			return
		}
		sel := append(strings.Split(sels, "\n"), "x:y:z")
		id, ok := d.Render(sel)
		if !ok {
			return
		}
		sid, err := spiffeid.FromString(id)
		if err != nil || sid.TrustDomain().Name() != "example.org" {
			t.Fatalf("rendered %q from %q: %v", id, tmpl, err)
		}
		filled, _ := fill(tmpl, func(string) (string, bool) { return "x", true })
		if strings.Count(id, "/") != strings.Count(filled, "/") {
			t.Fatalf("rendered %q from %q adds a segment", id, tmpl)
		}
	})
}

// TestValidateNodeCondition: a node condition alone names the nodes; an
// overlong one is refused (the CA compiles it).
func TestValidateNodeCondition(t *testing.T) {
	d := Definition{ID: "c", SPIFFEID: "spiffe://example.org/c", Selectors: []string{"unix:uid:1"}, NodeCondition: `provisioner == "k8s"`}
	if err := d.Validate("example.org"); err != nil {
		t.Errorf("a condition alone: %v", err)
	}
	if d.NodeAllowed("spiffe://example.org/n", "k8s") {
		t.Error("NodeAllowed allows by a condition it does not evaluate")
	}
	d.NodeCondition = strings.Repeat("x", MaxConditionLen+1)
	if err := d.Validate("example.org"); err == nil {
		t.Error("an overlong condition is accepted")
	}
	d.NodeCondition = ""
	if err := d.Validate("example.org"); err == nil {
		t.Error("a definition naming no node is accepted")
	}
}
