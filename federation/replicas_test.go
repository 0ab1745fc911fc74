package federation_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/federation"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	gofed "github.com/spiffe/go-spiffe/v2/federation"
)

// Two replicas on one etcd share the foreign bundles: one that cannot
// reach the endpoint starts from, and then follows, what the other
// fetched and stored.
func TestReplicasShareBundles(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	open := func() *etcd.Store {
		s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/fed"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	ep := &endpoint{}
	b1 := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{root(t, "one")})
	ep.bundle.Store(b1)
	h, err := gofed.NewHandler(tdB, ep)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	fast := config.Duration(200 * time.Millisecond)
	reaching := []config.Federation{{TrustDomain: "b.example", BundleEndpointURL: srv.URL + "/bundle", Profile: config.ProfileHTTPSWeb,
		WebRootsFile: "web.pem", RefreshMin: fast, RefreshMax: fast}}
	cutOff := []config.Federation{{TrustDomain: "b.example", BundleEndpointURL: "https://127.0.0.1:1/bundle", Profile: config.ProfileHTTPSWeb,
		WebRootsFile: "web.pem", RefreshMin: fast, RefreshMax: fast}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	one, err := federation.New(ctx, federation.Options{Dir: dir, Domains: reaching, Store: open()})
	if err != nil {
		t.Fatal(err)
	}
	go one.Run(ctx)
	waitBundle(t, one, b1)
	two, err := federation.New(ctx, federation.Options{Dir: dir, Domains: cutOff, Store: open()})
	if err != nil {
		t.Fatal(err)
	}
	waitBundle(t, two, b1) // from the store, before any fetch
	go two.Run(ctx)
	b2 := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{root(t, "two")})
	ep.bundle.Store(b2)
	waitBundle(t, one, b2)
	waitBundle(t, two, b2) // its fetches fail; it adopts the stored one
}
