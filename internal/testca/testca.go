// Package testca runs a real agentca daemon in-process for tests: a state
// directory in t.TempDir(), real bbolt, real HTTPS on loopback, and the
// admin socket for join tokens.
package testca

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/wire"
	"go.step.sm/crypto/pemutil"
)

// CA is a running daemon.
type CA struct {
	Dir     string
	URL     string // https://127.0.0.1:port
	HTTPURL string // http://127.0.0.1:port
	Roots   []*x509.Certificate
	Pool    *x509.CertPool
	Config  *config.Config

	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

// Options configure Start.
type Options struct {
	// Configure edits agentca.json before the daemon starts.
	Configure func(*config.Config)
	// Logger nil writes to t.Log at warn level and above.
	Logger *slog.Logger
}

// Start initialises and serves a CA for trust domain example.org; it is
// stopped at the end of the test.
func Start(t testing.TB, opts Options) *CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := daemon.Init(context.Background(), daemon.InitOptions{Dir: dir, TrustDomain: "example.org",
		HTTPS: "127.0.0.1:0", HTTP: "127.0.0.1:0"}); err != nil {
		t.Fatalf("init: %v", err)
	}
	cfgPath := filepath.Join(dir, config.FileName)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Configure != nil {
		opts.Configure(cfg)
		b, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if cfg, err = config.Load(cfgPath); err != nil {
			t.Fatalf("configure: %v", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &CA{Dir: dir, Config: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan [2]string, 1)
	go func() {
		c.done <- daemon.Serve(ctx, daemon.ServeOptions{Dir: dir, Logger: log,
			Ready: func(https, http string) { ready <- [2]string{https, http} }})
	}()
	select {
	case addrs := <-ready:
		c.URL, c.HTTPURL = "https://"+addrs[0], "http://"+addrs[1]
	case err := <-c.done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve: not ready after 30s")
	}
	t.Cleanup(c.Stop)
	b, err := os.ReadFile(filepath.Join(dir, daemon.RootsFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.Roots, err = pemutil.ParseCertificateBundle(b); err != nil {
		t.Fatal(err)
	}
	c.Pool = x509.NewCertPool()
	for _, r := range c.Roots {
		c.Pool.AddCert(r)
	}
	return c
}

// Stop drains and stops the daemon; it is safe to call twice.
func (c *CA) Stop() {
	c.stopOnce.Do(func() {
		c.cancel()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
		}
	})
}

// Token creates a join token for spiffeID through the admin socket.
func (c *CA) Token(t testing.TB, spiffeID string) string {
	t.Helper()
	toks := c.Tokens(t, spiffeID, 1, 0)
	return toks[0]
}

// Tokens creates count join tokens valid for ttl (zero: the default).
func (c *CA) Tokens(t testing.TB, spiffeID string, count int, ttl time.Duration) []string {
	t.Helper()
	req := wire.TokenRequest{SPIFFEID: spiffeID, Count: count}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var out wire.TokenResponse
	if status, body := c.Admin(t, http.MethodPost, "/admin/v1/tokens", req, &out); status != http.StatusCreated {
		t.Fatalf("token create: %d: %s", status, body)
	}
	toks := make([]string, len(out.Tokens))
	for i, tk := range out.Tokens {
		toks[i] = tk.Token
	}
	return toks
}

// Admin sends a request to the admin API over the admin socket (req, if
// not nil, as JSON), decodes a 2xx answer into out (if not nil) and
// returns the status and the body.
func (c *CA) Admin(t testing.TB, method, path string, req, out any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if req != nil {
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	sock := filepath.Join(c.Dir, daemon.AdminSocket)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	r, err := http.NewRequest(method, "http://agentca"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(r)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("admin %s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode, b
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
