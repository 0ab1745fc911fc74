package wire_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeaf checks that wire imports no other package of agentca: the
// client libraries import it, so whatever it linked they would link too.
func TestLeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 || deps[len(deps)-1] != "github.com/agentca/agentca/wire" {
		t.Fatalf("go list -deps does not end with wire: %s", out)
	}
	for _, pkg := range deps[:len(deps)-1] {
		if strings.HasPrefix(pkg, "github.com/agentca/agentca/") {
			t.Errorf("wire links %s", pkg)
		}
	}
}
