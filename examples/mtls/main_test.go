package main

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
)

// The example runs against a real CA while both certificates rotate.
func TestExample(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: func(c *config.Config) {
		c.Leaf.MinTTL = config.Duration(2 * time.Second)
	}})
	stats, err := run(context.Background(), Options{
		CAURL: ca.URL, RootFile: filepath.Join(ca.Dir, "roots.pem"),
		ServerToken: ca.Token(t, "spiffe://example.org/svc/server"),
		ClientToken: ca.Token(t, "spiffe://example.org/svc/client"),
		TTL:         5 * time.Second, Interval: 50 * time.Millisecond, Duration: 10 * time.Second, Out: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Failures != 0 || stats.Requests < 20 {
		t.Fatalf("%d requests, %d failures", stats.Requests, stats.Failures)
	}
	if stats.ServerCerts < 2 || stats.ClientCerts < 2 {
		t.Fatalf("certificates did not rotate: %d server, %d client", stats.ServerCerts, stats.ClientCerts)
	}
}
