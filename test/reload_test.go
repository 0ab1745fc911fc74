package test

import (
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPAdmins: an admin removed from agentca.json loses its rights at
// the SIGHUP (it can no longer mint join tokens over mTLS), and a setting
// a SIGHUP cannot apply is named in a WARN line.
func TestSIGHUPAdmins(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	const adminID = "spiffe://example.org/admin/ops"
	c.editConfig(func(cfg map[string]any) { cfg["admins"] = []string{adminID} })
	c.start()
	dir := filepath.Join(t.TempDir(), "admin")
	if r := c.enroll(c.token(adminID), dir); r.code != 0 {
		t.Fatal(r)
	}
	hc := c.client(readCreds(t, dir).tlsCert())
	defer hc.CloseIdleConnections()
	mint := func() apiResp {
		return postJSON(t, hc, c.URL+"/admin/v1/tokens", map[string]any{"spiffe_id": "spiffe://example.org/admin/other"})
	}
	if r := mint(); r.status != http.StatusCreated {
		t.Fatalf("the admin could not mint a token: %d %s", r.status, r.body)
	}
	c.editConfig(func(cfg map[string]any) {
		delete(cfg, "admins")
		cfg["ocsp"] = map[string]any{"validity": "7m"}
	})
	c.proc.signal(t, syscall.SIGHUP)
	eventually(t, 10*time.Second, 50*time.Millisecond, "the removed admin to be refused", func() bool {
		return mint().status == http.StatusForbidden
	})
	wantError(t, mint(), http.StatusForbidden, "forbidden")
	eventually(t, 5*time.Second, 50*time.Millisecond, "a WARN line naming ocsp", func() bool {
		log := c.proc.log()
		i := strings.Index(log, "apply only at the next start")
		return i >= 0 && strings.Contains(log[i:], "settings=ocsp") && strings.Contains(log[:i], "level=WARN")
	})
}
