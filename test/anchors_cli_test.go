package test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// The anchors CLI against the real daemon, and the admin API over HTTPS:
// an admin's certificate gets in, another agent's does not.
func TestAnchorsCLIAndAdminHTTPS(t *testing.T) {
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) { cfg["admins"] = []string{"spiffe://example.org/admin/ops"} })
	c.start()

	r := mustRun(t, "anchors", "list", "--dir", c.Dir)
	if !strings.Contains(r.stdout, "active") || !strings.Contains(r.stdout, c.Fingerprint) {
		t.Fatalf("anchors list: want the active anchor with the root fingerprint %s:\n%s", c.Fingerprint, r)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", c.Dir).stdout), &list); err != nil || len(list) != 1 {
		t.Fatalf("anchors list --json: %v %v", err, list)
	}
	for _, k := range []string{"id", "state", "root_sha256", "issuer_ski", "not_after"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("anchors list --json lacks %q: %v", k, list[0])
		}
	}
	id := list[0]["id"].(string)
	// Refusals are one line on stderr and exit 1.
	for _, args := range [][]string{
		{"anchors", "retire", "--dir", c.Dir, id},       // the active anchor
		{"anchors", "activate", "--dir", c.Dir, "nope"}, // unknown
		{"anchors", "activate", "--dir", c.Dir, id},     // not staged
		{"anchors", "stage", "--dir", c.Dir, "--intermediate-only", "--cross-sign"},
	} {
		r := runCLI(t, args...)
		if r.code != 1 {
			t.Errorf("%v: want exit 1:\n%s", args, r)
		}
		oneLine(t, r)
	}
	if r := runCLI(t, "anchors", "activate", "--dir", c.Dir); r.code != 2 {
		t.Errorf("activate without an ID: want exit 2 (usage):\n%s", r)
	}
	r = mustRun(t, "anchors", "stage", "--dir", c.Dir, "--intermediate-only")
	if !strings.Contains(r.stdout, "staged") {
		t.Fatalf("stage:\n%s", r)
	}
	r = mustRun(t, "anchors", "status", "--dir", c.Dir)
	if !strings.Contains(r.stdout, "activate after") {
		t.Errorf("status: want a note on when activation is safe:\n%s", r)
	}

	admin := filepath.Join(t.TempDir(), "admin")
	if r := c.enroll(c.token("spiffe://example.org/admin/ops"), admin); r.code != 0 {
		t.Fatal(r)
	}
	other := filepath.Join(t.TempDir(), "other")
	if r := c.enroll(c.token("spiffe://example.org/agent/x"), other); r.code != 0 {
		t.Fatal(r)
	}
	resp := do(t, c.client(readCreds(t, admin).tlsCert()), http.MethodGet, c.URL+"/admin/v1/anchors", "", nil)
	if resp.status != http.StatusOK {
		t.Fatalf("admin over HTTPS: %d %s", resp.status, resp.body)
	}
	var got []map[string]any
	if err := json.Unmarshal(resp.body, &got); err != nil || len(got) != 2 {
		t.Fatalf("admin over HTTPS: %v %s", err, resp.body)
	}
	wantError(t, do(t, c.client(readCreds(t, other).tlsCert()), http.MethodGet, c.URL+"/admin/v1/anchors", "", nil), http.StatusForbidden, "forbidden")
	wantError(t, do(t, c.client(nil), http.MethodGet, c.URL+"/admin/v1/anchors", "", nil), http.StatusUnauthorized, "client_certificate_required")
}
