package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// init refuses a directory that holds other files (a source tree, a home
// directory): the CA's keys must not land among them. An empty directory
// is fine.
func TestInitRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "authority.go"), []byte("package ca\n"))
	r := runCLI(t, "init", "--dir", dir, "--trust-domain", "example.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if r.code != 1 || !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "authority.go") {
		t.Fatalf("init into a directory with other files: want exit 1 naming the file:\n%s", r)
	}
	oneLine(t, r)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("the refused init left %d entries in the directory, want only authority.go", len(entries))
	}
	empty := t.TempDir()
	mustRun(t, "init", "--dir", empty, "--trust-domain", "example.org", "--https", freeAddr(t), "--http", freeAddr(t))
	if _, err := os.Stat(filepath.Join(empty, "agentca.json")); err != nil {
		t.Fatalf("init into an empty directory: %v", err)
	}
}
