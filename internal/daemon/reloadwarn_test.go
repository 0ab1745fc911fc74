package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
)

// SIGHUP applies provisioners and the policy; every other change is
// named in one WARN, since it waits for a restart.
func TestWarnNotReloaded(t *testing.T) {
	running := config.Default("example.org", "127.0.0.1:8443", "127.0.0.1:8080")
	next := config.Default("example.org", "127.0.0.1:9443", "127.0.0.1:8080")
	next.Leaf.DefaultTTL = config.Duration(10 * time.Minute)
	next.Logging.Level = "debug"
	next.Provisioners = append(next.Provisioners, config.Provisioner{Name: "more", Type: "join"})
	next.Policy.File = "policy.json"
	var buf bytes.Buffer
	warnNotReloaded(slog.New(slog.NewTextHandler(&buf, nil)), running, next)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"setting=listen.https", "setting=public_urls.https", "setting=leaf.default_ttl", "setting=logging.level"}
	if len(lines) != len(want) {
		t.Fatalf("got %d warnings, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], "level=WARN") || !strings.Contains(lines[i], w) {
			t.Errorf("warning %d: %q, want a WARN with %s", i, lines[i], w)
		}
	}
	buf.Reset()
	warnNotReloaded(slog.New(slog.NewTextHandler(&buf, nil)), running, running)
	if buf.Len() != 0 {
		t.Errorf("an unchanged file warned: %s", buf.String())
	}
}
