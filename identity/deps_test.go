package identity_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestIdentityIsALeaf: package identity imports nothing of agentca's, so
// every part of the CA can share its rules.
func TestIdentityIsALeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/agentca/agentca/") && pkg != "github.com/agentca/agentca/identity" {
			t.Errorf("identity links %s", pkg)
		}
	}
}
