package agent_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestNoServerCode checks that the client libraries link no server code: a
// node agent or a relying service built on agent or verify must not pull in
// the CA, the store, the server configuration or a KMS, nor the HTTP
// server (the bodies they share with it are in the leaf package wire).
func TestNoServerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../agent", "../verify/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, want := range []string{"github.com/agentca/agentca/agent", "github.com/agentca/agentca/verify", "github.com/agentca/agentca/verify/oauth"} {
		if !slices.Contains(deps, want) {
			t.Fatalf("go list -deps does not list %s: %s", want, out)
		}
	}
	forbidden := []string{
		"github.com/agentca/agentca/ca",
		"github.com/agentca/agentca/store",
		"github.com/agentca/agentca/internal/config",
		"github.com/agentca/agentca/api",
	}
	for _, pkg := range deps {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("agent or verify links %s", pkg)
			}
		}
		if strings.Contains(pkg, "/kms") {
			t.Errorf("agent or verify links a KMS: %s", pkg)
		}
	}
}
