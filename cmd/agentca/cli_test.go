package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

var update = flag.Bool("update", false, "rewrite testdata/errors.golden")

// walk calls fn for every command and its path, depth first.
func walk(cmds []*cli.Command, path string, fn func(path string, c *cli.Command)) {
	for _, c := range cmds {
		p := strings.TrimSpace(path + " " + c.Name)
		fn(p, c)
		walk(c.Subcommands, p, fn)
	}
}

// docs/cli.md promises an AGENTCA_* variable for every flag; --help must
// show no placeholder made of a backtick quote and no doubled default.
func TestEveryFlagHasEnvVarAndCleanHelp(t *testing.T) {
	var none string
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{}, &none)
	count := 0
	check := func(path string, flags []cli.Flag) {
		seen := map[string]string{}
		for _, f := range flags {
			name := f.Names()[0]
			count++
			d, ok := f.(cli.DocGenerationFlag)
			if !ok {
				t.Errorf("%s --%s: %T has no help text", path, name, f)
				continue
			}
			env := d.GetEnvVars()
			if len(env) == 0 || !strings.HasPrefix(env[0], "AGENTCA_") {
				t.Errorf("%s --%s: environment variables %v, want one starting AGENTCA_", path, name, env)
			}
			for _, e := range env {
				if other, dup := seen[e]; dup {
					t.Errorf("%s: --%s and --%s share %s", path, name, other, e)
				}
				seen[e] = name
			}
			if strings.Contains(d.GetUsage(), "`") {
				t.Errorf("%s --%s: a backtick in the usage becomes a placeholder: %q", path, name, d.GetUsage())
			}
			shown := d.GetDefaultText()
			if b, ok := f.(*cli.BoolFlag); ok && b.DisableDefaultText {
				shown = ""
			}
			if strings.Contains(strings.ToLower(d.GetUsage()), "default") && shown != "" {
				t.Errorf("%s --%s: the usage names a default and help adds (default: %s)", path, name, shown)
			}
		}
	}
	check("agentca", app.Flags)
	walk(app.Commands, "", func(path string, c *cli.Command) { check(path, c.Flags) })
	if count < 100 {
		t.Fatalf("walked %d flags; the command tree is not what this test expects", count)
	}
}

// A flag after a positional argument is parsed as a flag.
func TestFlagsAfterPositionalArguments(t *testing.T) {
	var none string
	app := newApp(&bytes.Buffer{}, &bytes.Buffer{}, &none)
	for _, tc := range []struct{ in, want string }{
		{"agentca anchors activate ID --force", "agentca anchors activate --force ID"},
		{"agentca task end ID --json --dir D", "agentca task end --json --dir D ID"},
		{"agentca --log-level debug task end ID --dir=D", "agentca --log-level debug task end --dir=D ID"},
		{"agentca task end ID -- --json", "agentca task end ID -- --json"},
		{"agentca task end ID --bogus", "agentca task end --bogus ID"},
		{"agentca help task", "agentca help task"},
	} {
		got, _ := reorderArgs(app, strings.Fields(tc.in))
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: got %q, want %q", tc.in, strings.Join(got, " "), tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"agentca", "version"}, {"agentca", "--version"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if !regexp.MustCompile(`(?s)^agentca \S+\ncommit .+\ngo1\.\d+`).MatchString(out.String()) {
			t.Errorf("%v printed %q, want the module version, the commit and the Go version", args, out.String())
		}
	}
}

// The error messages of issue 16, as a golden file (go test -update
// rewrites it): each says what is wrong and how to fix it.
func TestErrorMessagesGolden(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "agentca.json"), []byte("{\n  \"trust_domain\": \"example.org\"\n  \"listen\": {}\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A TLS server whose certificate chains to nothing the client trusts.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	otherRoot := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(otherRoot, testRootPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"duration flag", nil, []string{"token", "create", "--spiffe-id", "spiffe://example.org/a", "--ttl", "15"}},
		{"duration variable", []string{"AGENTCA_TTL=15"}, []string{"enroll", "--ca", "https://ca", "--out", "x"}},
		{"flag after the task ID", nil, []string{"task", "end", "build-7", "--json", "--dir", filepath.Join(dir, "none")}},
		{"unknown flag after the task ID", nil, []string{"task", "end", "build-7", "--bogus"}},
		{"agentca.json syntax", nil, []string{"serve", "--dir", bad}},
		{"wrong --root", nil, []string{"enroll", "--ca", srv.URL, "--root", otherRoot, "--token", "t", "--out", filepath.Join(dir, "creds")}},
		{"log over HTTPS", nil, []string{"log", "sth", "--ca", srv.URL}},
	}
	var got strings.Builder
	for _, tc := range cases {
		for _, kv := range tc.env {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"agentca"}, tc.args...), &out, &errb)
		for _, kv := range tc.env {
			k, _, _ := strings.Cut(kv, "=")
			os.Unsetenv(k)
		}
		norm := strings.NewReplacer(srv.URL, "https://CA", strings.TrimPrefix(srv.URL, "https://"), "CA", dir, "DIR").Replace
		fmt.Fprintf(&got, "# %s\n%s\nexit %d: %s\n", tc.name, norm(strings.Join(tc.args, " ")), code, norm(errb.String()))
	}
	golden := filepath.Join("testdata", "errors.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if got.String() != string(want) {
		t.Errorf("error messages differ from %s (go test -update to accept):\n%s", golden, got.String())
	}
}

// testRootPEM is a new self-signed root no test server chains to.
func testRootPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
