package azureimds_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/provisioners/azureimds"
)

// readSeed returns the token of a fuzz seed file.
func readSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/fuzz/FuzzAzureIMDSAttest/" + name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFuzzSeeds checks that the valid seeds are accepted, so that the
// fuzzer starts from inputs that pass every check.
func TestFuzzSeeds(t *testing.T) {
	testChain(t)
	for _, name := range []string{"valid", "with-chain"} {
		p := newProvisioner(t, "azure", testOptions, newClock(fuzzTime), 0)
		azureimds.AddChallenge(p, fuzzNonce, fuzzTime.Add(-20*time.Second))
		if _, err := p.Attest(context.Background(), readSeed(t, name)); err != nil {
			t.Errorf("seed %s: %v", name, err)
		}
	}
}
