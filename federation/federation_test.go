package federation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/federation"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store/bolt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	gofed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var tdB = spiffeid.RequireTrustDomainFromString("b.example")

func root(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// endpoint is a bundle endpoint (go-spiffe's handler) whose bundle the
// test swaps; fail makes it answer 500.
type endpoint struct {
	bundle atomic.Pointer[spiffebundle.Bundle]
	fail   atomic.Bool
}

func (e *endpoint) GetBundleForTrustDomain(spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if e.fail.Load() {
		return nil, errors.New("down")
	}
	return e.bundle.Load(), nil
}

func waitBundle(t *testing.T, f *federation.Federation, want *spiffebundle.Bundle) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := f.GetBundleForTrustDomain(tdB)
		if err == nil && len(got.X509Authorities()) == len(want.X509Authorities()) && got.X509Authorities()[0].Equal(want.X509Authorities()[0]) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle %v, %v; want the one with %s", got, err, want.X509Authorities()[0].Subject)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An https_web domain: nothing before the first fetch; then each good
// bundle replaces the last; a bundle without X.509 authority and a 500
// keep the last good one; a second instance on the same store (a
// replica, a restart) starts from the stored one.
func TestFetchKeepsLastGood(t *testing.T) {
	ep := &endpoint{}
	b1 := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{root(t, "one")})
	b1.SetRefreshHint(time.Second)
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
	st, err := bolt.Open(filepath.Join(dir, "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	domains := []config.Federation{{TrustDomain: "b.example", BundleEndpointURL: srv.URL + "/bundle", Profile: config.ProfileHTTPSWeb,
		WebRootsFile: "web.pem", RefreshMin: config.Duration(200 * time.Millisecond), RefreshMax: config.Duration(200 * time.Millisecond)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := federation.New(ctx, federation.Options{Dir: dir, Domains: domains, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.GetBundleForTrustDomain(tdB); !errors.Is(err, federation.ErrUnknownTrustDomain) {
		t.Fatalf("before the first fetch: %v", err)
	}
	if _, err := f.GetBundleForTrustDomain(spiffeid.RequireTrustDomainFromString("c.example")); !errors.Is(err, federation.ErrUnknownTrustDomain) {
		t.Fatalf("a trust domain not federated: %v", err)
	}
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	waitBundle(t, f, b1)

	ep.bundle.Store(spiffebundle.New(tdB)) // empty: refused
	time.Sleep(time.Second)
	waitBundle(t, f, b1)
	ep.fail.Store(true) // 500: kept
	time.Sleep(time.Second)
	waitBundle(t, f, b1)

	b2 := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{root(t, "two")})
	ep.bundle.Store(b2)
	ep.fail.Store(false)
	waitBundle(t, f, b2)
	cancel()
	<-done

	// A replica or a restart starts from the store, before any fetch.
	f2, err := federation.New(context.Background(), federation.Options{Dir: dir, Domains: domains, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	waitBundle(t, f2, b2)
}

// A bootstrap file that is missing, not a bundle, or without an X.509
// authority stops the CA from starting.
func TestBootstrapRefused(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	jwtOnly := spiffebundle.New(tdB)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := jwtOnly.AddJWTAuthority("k", &k.PublicKey); err != nil {
		t.Fatal(err)
	}
	raw, err := jwtOnly.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{"jwt-only.json": raw, "garbage.json": []byte("{"), "missing.json": nil} {
		if content != nil {
			if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := federation.New(context.Background(), federation.Options{Dir: dir, Store: st, Domains: []config.Federation{{
			TrustDomain: "b.example", BundleEndpointURL: "https://127.0.0.1:1/v1/bundle", Profile: config.ProfileHTTPSSPIFFE,
			EndpointSPIFFEID: "spiffe://b.example/agentca/server", BootstrapBundle: name}}})
		if err == nil {
			t.Errorf("bootstrap %s accepted", name)
		}
	}
	// A good one is stored and served.
	good := spiffebundle.FromX509Authorities(tdB, []*x509.Certificate{root(t, "boot")})
	raw, err = good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "good.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := federation.New(context.Background(), federation.Options{Dir: dir, Store: st, Domains: []config.Federation{{
		TrustDomain: "b.example", BundleEndpointURL: "https://127.0.0.1:1/v1/bundle", Profile: config.ProfileHTTPSSPIFFE,
		EndpointSPIFFEID: "spiffe://b.example/agentca/server", BootstrapBundle: "good.json"}}})
	if err != nil {
		t.Fatal(err)
	}
	waitBundle(t, f, good)
	set, err := st.FederatedBundles(context.Background())
	if err != nil || set.Bundles["b.example"].Source != "bootstrap" {
		t.Fatalf("stored: %+v %v", set, err)
	}
}
