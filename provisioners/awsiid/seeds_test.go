package awsiid_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

// readSeed returns the token of a fuzz seed file.
func readSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/fuzz/FuzzAWSAttest/" + name)
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
	p := newProvisioner(t, "aws", testOptions, start)
	for _, name := range []string{"rsa2048", "legacy"} {
		if _, err := p.Attest(context.Background(), readSeed(t, name)); err != nil {
			t.Errorf("seed %s: %v", name, err)
		}
	}
}
