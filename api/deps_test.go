package api_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoInternalCode: the HTTP API links nothing under internal/ (the
// configuration file's parser, the daemon): the domain rules it applies
// come from package identity, and the policy and lifetime from ca.
func TestNoInternalCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/agentca/agentca/internal/") {
			t.Errorf("api links %s", pkg)
		}
	}
}
