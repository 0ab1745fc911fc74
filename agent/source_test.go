package agent_test

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// shortLived lets the CA issue certificates of a few seconds, so that
// rotations happen during the test.
func shortLived(c *config.Config) {
	c.Leaf.MinTTL = config.Duration(2 * time.Second)
	c.Leaf.DefaultTTL = config.Duration(6 * time.Second)
}

func newSource(t *testing.T, ca *testca.CA, id string, ttl time.Duration, onRenew func(*agent.Credentials)) *agent.Source {
	t.Helper()
	token := ca.Token(t, id)
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return token, nil },
		TTL:    ttl, OnRenew: onRenew, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
	})
	if err != nil {
		t.Fatalf("NewSource(%s): %v", id, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// Two services talk mTLS, one handshake per request, while both rotate
// their certificates at least three times: not one handshake may fail.
func TestRotationWithoutFailedHandshakes(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: shortLived})
	serverID := spiffeid.RequireFromString("spiffe://example.org/svc/server")
	clientID := spiffeid.RequireFromString("spiffe://example.org/svc/client")
	var serverRotations, clientRotations atomic.Int32
	srvSrc := newSource(t, ca, serverID.String(), 5*time.Second, func(*agent.Credentials) { serverRotations.Add(1) })
	cliSrc := newSource(t, ca, clientID.String(), 5*time.Second, func(*agent.Credentials) { clientRotations.Add(1) })
	serverRotations.Store(0)
	clientRotations.Store(0)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: srvSrc.ServerTLSConfig(tlsconfig.AuthorizeID(clientID)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := spiffeid.FromURI(r.TLS.PeerCertificates[0].URIs[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			fmt.Fprint(w, id.String())
		}),
		ErrorLog: nil,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   cliSrc.ClientTLSConfig(tlsconfig.AuthorizeID(serverID)),
		DisableKeepAlives: true, // every request is a new handshake
	}}
	var handshakes, failures int
	serials := map[string]bool{}
	deadline := time.Now().Add(90 * time.Second)
	for serverRotations.Load() < 3 || clientRotations.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d server and %d client rotations before the deadline", serverRotations.Load(), clientRotations.Load())
		}
		handshakes++
		resp, err := client.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			failures++
			t.Errorf("handshake %d failed: %v", handshakes, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != clientID.String() {
			failures++
			t.Errorf("request %d: %s %q", handshakes, resp.Status, body)
		}
		serials[cliSrc.Current().Serial] = true
		time.Sleep(20 * time.Millisecond)
	}
	if failures != 0 {
		t.Fatalf("%d of %d handshakes failed during rotation", failures, handshakes)
	}
	if len(serials) < 3 {
		t.Fatalf("client used %d certificates, want at least 3", len(serials))
	}
	t.Logf("%d handshakes, 0 failures, %d server and %d client rotations", handshakes, serverRotations.Load(), clientRotations.Load())
}

func TestRenewNowAndFiles(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	dir := t.TempDir()
	renewed := make(chan *agent.Credentials, 4)
	token := ca.Token(t, "spiffe://example.org/agent/files")
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join", Dir: dir,
		Attest:  func(context.Context) (string, error) { return token, nil },
		OnRenew: func(c *agent.Credentials) { renewed <- c },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first := <-renewed
	src.RenewNow()
	var second *agent.Credentials
	select {
	case second = <-renewed:
	case <-time.After(20 * time.Second):
		t.Fatal("RenewNow did not renew")
	}
	if second.Serial == first.Serial || second.SPIFFEID != first.SPIFFEID {
		t.Fatalf("renewal: serial %s -> %s, id %s -> %s", first.Serial, second.Serial, first.SPIFFEID, second.SPIFFEID)
	}
	if second.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(first.Key.Public()) {
		t.Fatal("renewal kept the key; a fresh key is the default")
	}
	onDisk, roots, err := agent.LoadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk.Serial != second.Serial || len(roots) != 1 || !roots[0].Equal(ca.Roots[0]) {
		t.Fatalf("files hold serial %s with %d roots, want %s", onDisk.Serial, len(roots), second.Serial)
	}
	fi, err := os.Stat(filepath.Join(dir, agent.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode %v, %v", fi.Mode(), err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if src.Err() != nil {
		t.Fatalf("Err after Close = %v, want nil", src.Err())
	}
}

// With the CA gone and no attestation to enroll again, the Source retries
// until its certificate expires, then stops with ErrExpired.
func TestExpiresWithoutAttestation(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: shortLived})
	// Long enough that it is still valid when the Source below starts,
	// on a loaded machine.
	first := newSource(t, ca, "spiffe://example.org/agent/once", 8*time.Second, nil)
	initial := first.Current()
	first.Close()
	ca.Stop()
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Initial: initial, MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	select {
	case <-src.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Source still running 30s after its certificate expired")
	}
	if !errors.Is(src.Err(), agent.ErrExpired) {
		t.Fatalf("Err = %v, want ErrExpired", src.Err())
	}
	if time.Now().Before(initial.NotAfter) {
		t.Fatalf("stopped at %v, before the certificate expired at %v", time.Now(), initial.NotAfter)
	}
}

// Many goroutines reading the current certificate while it rotates.
func TestConcurrentReaders(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: shortLived})
	src := newSource(t, ca, "spiffe://example.org/agent/race", 3*time.Second, nil)
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				c, err := src.GetClientCertificate(nil)
				if err != nil || c.Leaf == nil {
					t.Errorf("GetClientCertificate: %v", err)
					return
				}
				if _, err := src.GetX509SVID(); err != nil {
					t.Error(err)
					return
				}
				src.RenewNow()
			}
		}()
	}
	wg.Wait()
}

// With the log key, a Source accepts only certificates whose receipt
// proves them in the issuance log.
func TestLogReceiptVerified(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	b, err := os.ReadFile(filepath.Join(ca.Dir, "log.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := agent.ParseLogKey(b)
	if err != nil {
		t.Fatal(err)
	}
	token := ca.Token(t, "spiffe://example.org/agent/logged")
	src, err := agent.NewSource(context.Background(), agent.Config{CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return token, nil }, LogKey: logKey})
	if err != nil {
		t.Fatalf("NewSource with the log key: %v", err)
	}
	defer src.Close()
	cr := src.Current()
	if cr.LogReceipt == nil {
		t.Fatal("no log receipt kept")
	}
	if err := agent.VerifyReceipt(cr, logKey); err != nil {
		t.Fatal(err)
	}
	// Another key, a tampered proof and a tampered timestamp all fail.
	other, err := agent.NewKey("ec-p256")
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.VerifyReceipt(cr, other.Public()); err == nil {
		t.Error("a receipt verified with another key")
	}
	bad := *cr
	r := *cr.LogReceipt
	r.Timestamp++
	bad.LogReceipt = &r
	if err := agent.VerifyReceipt(&bad, logKey); err == nil {
		t.Error("a receipt with another timestamp verified")
	}
	if len(cr.LogReceipt.InclusionProof) > 0 {
		r2 := *cr.LogReceipt
		r2.InclusionProof = append([][]byte{make([]byte, 32)}, r2.InclusionProof[1:]...)
		bad.LogReceipt = &r2
		if err := agent.VerifyReceipt(&bad, logKey); err == nil {
			t.Error("a tampered inclusion proof verified")
		}
	}
	bad.LogReceipt = nil
	if err := agent.VerifyReceipt(&bad, logKey); !errors.Is(err, agent.ErrNoReceipt) {
		t.Errorf("no receipt: err = %v, want ErrNoReceipt", err)
	}
}

// A certificate that expires while its attestation cannot be read again
// (a spent token, a missing token file) stops the Source with ErrExpired
// instead of retrying forever.
func TestExpiresWhenAttestationUnreadable(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: shortLived})
	// Long enough that it is still valid when the Source below starts,
	// on a loaded machine.
	first := newSource(t, ca, "spiffe://example.org/agent/gone", 8*time.Second, nil)
	initial := first.Current()
	first.Close()
	ca.Stop()
	var reads atomic.Int32
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Initial: initial, Provisioner: "join",
		Attest: func(context.Context) (string, error) {
			reads.Add(1)
			return "", errors.New("open /run/secrets/token: no such file or directory")
		},
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	select {
	case <-src.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("Source still running 30s after its certificate expired with no readable attestation")
	}
	if !errors.Is(src.Err(), agent.ErrExpired) {
		t.Fatalf("Err = %v, want ErrExpired", src.Err())
	}
	if reads.Load() != 1 {
		t.Fatalf("attestation read %d times, want 1", reads.Load())
	}
}
