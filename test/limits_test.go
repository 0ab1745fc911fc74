package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/daemon"
)

// TestConnectionFlood: far more idle keep-alive connections (and
// connections that never start TLS) than the HTTPS listener's bound do
// not lock anyone out: a new HTTPS client and the admin socket are served
// within a second, the listener holds no more than its bound, and the
// bound is a WARN line and a metric.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	const bound = 20
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) {
		cfg["limits"] = map[string]any{"https_connections": bound, "admin_connections": 4}
	})
	c.start()
	conf := &tls.Config{RootCAs: c.pool(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	var flood []net.Conn
	defer func() {
		for _, fc := range flood {
			fc.Close()
		}
	}()
	// Idle keep-alive connections: one request each, then silence.
	for i := range 3 * bound {
		d := &net.Dialer{Timeout: 5 * time.Second}
		tc, err := tls.DialWithDialer(d, "tcp", c.HTTPS, conf)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, tc)
		if _, err := io.WriteString(tc, "GET /health HTTP/1.1\r\nHost: ca\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			// Evicted already: the bound at work.
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Connections that never send a byte.
	for range bound {
		nc, err := net.DialTimeout("tcp", c.HTTPS, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, nc)
	}

	start := time.Now()
	hc := c.client(nil)
	hc.Timeout = 5 * time.Second
	defer hc.CloseIdleConnections()
	r, err := tryDo(hc, http.MethodGet, c.URL+"/health", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("a new HTTPS client during the flood: %v %d", err, r.status)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a new HTTPS client was served after %s, want ≤ 1s", d)
	}
	start = time.Now()
	admin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(c.Dir, daemon.AdminSocket))
		}}}
	defer admin.CloseIdleConnections()
	r, err = tryDo(admin, http.MethodGet, "http://agentca/admin/v1/certs?limit=1", "", nil)
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("the admin socket during the flood: %v %d %s", err, r.status, r.body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the admin socket answered after %s, want ≤ 1s", d)
	}

	m := do(t, &http.Client{Timeout: 5 * time.Second}, http.MethodGet, "http://"+c.HTTP+"/metrics", "", nil)
	metric := func(name string) float64 {
		t.Helper()
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
		mm := re.FindStringSubmatch(string(m.body))
		if mm == nil {
			t.Fatalf("no %s in /metrics", name)
		}
		v, err := strconv.ParseFloat(mm[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := metric(`agentca_listener_limit_reached_total{listener="https"}`); v < bound {
		t.Errorf("agentca_listener_limit_reached_total{https} = %v, want ≥ %d", v, bound)
	}
	if v := metric(`agentca_listener_connections{listener="https"}`); v > bound {
		t.Errorf("the HTTPS listener holds %v connections, bound %d", v, bound)
	}
	if v := metric(`agentca_listener_connection_limit{listener="admin"}`); v != 4 {
		t.Errorf("admin limit %v, want 4", v)
	}
	eventually(t, 5*time.Second, 50*time.Millisecond, "the WARN line", func() bool {
		for _, line := range strings.Split(c.proc.log(), "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "listener connection limit reached") && strings.Contains(line, "listener=https") {
				return true
			}
		}
		return false
	})
}
