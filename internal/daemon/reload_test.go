package daemon

import (
	"slices"
	"strings"
	"testing"

	"github.com/agentca/agentca/internal/config"
)

func TestNeedRestart(t *testing.T) {
	const base = `{"trust_domain": "example.org",
  "listen": {"https": "127.0.0.1:8443", "http": "127.0.0.1:8080"},
  "admins": ["spiffe://example.org/admin/a"],
  "provisioners": [{"type": "join-token", "name": "join"}]}`
	parse := func(s string) *config.Config {
		t.Helper()
		c, err := config.Parse([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	started := parse(base)
	if got := needRestart(started, parse(base)); len(got) != 0 {
		t.Fatalf("unchanged: %v", got)
	}
	// Admins, provisioners, the policy and the leaf TTLs apply at once.
	applied := strings.Replace(base, `"admins": ["spiffe://example.org/admin/a"]`, `"admins": [], "leaf": {"max_ttl": "30m"}`, 1)
	applied = strings.Replace(applied, `"name": "join"`, `"name": "join2"`, 1)
	if got := needRestart(started, parse(applied)); len(got) != 0 {
		t.Fatalf("applied settings named: %v", got)
	}
	changed := strings.Replace(base, `127.0.0.1:8443`, `127.0.0.1:9443`, 1)
	changed = strings.Replace(changed, `"admins"`, `"leaf": {"min_ttl": "2m"}, "ocsp": {"validity": "10m"}, "admins"`, 1)
	if got, want := needRestart(started, parse(changed)), []string{"leaf.min_ttl", "listen", "ocsp", "public_urls"}; !slices.Equal(got, want) {
		t.Fatalf("needRestart = %v, want %v", got, want)
	}
}

func TestConnectionBounds(t *testing.T) {
	h, p, a := connectionBounds(config.Limits{}, 65536)
	if a != config.DefaultAdminConnections || h+p+a+fdReserve > 65536 || h < 3*p-3 {
		t.Fatalf("derived bounds https %d http %d admin %d", h, p, a)
	}
	if h, p, a := connectionBounds(config.Limits{HTTPSConnections: 20, HTTPConnections: 30, AdminConnections: 4}, 65536); h != 20 || p != 30 || a != 4 {
		t.Fatalf("configured bounds ignored: %d %d %d", h, p, a)
	}
	if h, p, _ := connectionBounds(config.Limits{}, 256); h < minConnections || p < minConnections {
		t.Fatalf("a small file limit gives %d / %d", h, p)
	}
}
