package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/wire"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	xocsp "golang.org/x/crypto/ocsp"
)

// Leaf lifetimes of the rotation tests: a few seconds, so that a whole
// rotation (stage, one longest leaf lifetime, activate, the old leaves
// expire, retire) takes about half a minute.
const (
	rotTTL    = 6 * time.Second
	rotMinTTL = 2 * time.Second
)

func rotationCA(t *testing.T) *testca.CA {
	return testca.Start(t, testca.Options{Configure: func(c *config.Config) {
		c.Leaf.MinTTL = config.Duration(rotMinTTL)
		c.Leaf.DefaultTTL = config.Duration(rotTTL)
		c.Leaf.MaxTTL = config.Duration(rotTTL)
		c.OCSP.Validity = config.Duration(time.Minute)
		// retire also waits for the old JWT-SVID key's last token
		// (max_ttl + 2 s after the activation): shorter than the leaves.
		c.JWTSVID.MaxTTL = config.Duration(2 * time.Second)
	}})
}

// conversation is an mTLS service and its client, both agents of the CA,
// talking through the verify library: one new handshake per request.
type conversation struct {
	name       string
	url        string
	client     *http.Client
	clientSrc  *agent.Source
	serverSrc  *agent.Source
	handshakes atomic.Int64
	failures   atomic.Int64
	mu         sync.Mutex
	errs       []string
}

func rotationAgent(t *testing.T, ca *testca.CA, id string, onRenew func(*agent.Credentials)) *agent.Source {
	t.Helper()
	token := ca.Token(t, id)
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join", TTL: rotTTL, OnRenew: onRenew,
		Attest:     func(context.Context) (string, error) { return token, nil },
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
	})
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// newVerifier is a relying service's verifier: it follows /v1/roots (every
// 500 ms) unless roots is given, in which case it keeps those roots only.
func newVerifier(t *testing.T, ca *testca.CA, roots []*x509.Certificate, authorize tlsconfig.Authorizer) *verify.Verifier {
	t.Helper()
	opts := verify.Options{TrustDomain: "example.org", Roots: roots, Authorize: authorize}
	if roots == nil {
		opts.Roots, opts.RootsURL, opts.RefreshInterval = ca.Roots, ca.URL+"/v1/roots", 500*time.Millisecond
	}
	v, err := verify.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// startConversation serves mTLS with server (verifying clients with
// serverV) and dials it with client (verifying the server with clientV).
func startConversation(t *testing.T, name string, server, client *agent.Source, serverV, clientV *verify.Verifier) *conversation {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: serverV.ServerTLSConfig(server), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			fmt.Fprint(w, id.String())
		})}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return &conversation{name: name, url: "https://" + ln.Addr().String() + "/", clientSrc: client, serverSrc: server,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: clientV.ClientTLSConfig(client), DisableKeepAlives: true}}}
}

// run makes requests until ctx is done.
func (c *conversation) run(ctx context.Context, want string) {
	for ctx.Err() == nil {
		c.handshakes.Add(1)
		resp, err := c.client.Get(c.url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != want {
				err = fmt.Errorf("%s %q", resp.Status, body)
			}
		}
		if err != nil {
			c.failures.Add(1)
			c.mu.Lock()
			c.errs = append(c.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			c.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func anchorStatus(t *testing.T, ca *testca.CA, id string) wire.AnchorStatus {
	t.Helper()
	var all []wire.AnchorStatus
	if status, body := ca.Admin(t, http.MethodGet, "/admin/v1/anchors", nil, &all); status != http.StatusOK {
		t.Fatalf("list anchors: %d %s", status, body)
	}
	for _, a := range all {
		if a.ID == id {
			return a
		}
	}
	t.Fatalf("anchor %s not listed: %+v", id, all)
	return wire.AnchorStatus{}
}

func getBody(t *testing.T, hc *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// caHTTPS is a client of the CA's HTTPS listener trusting every root the
// CA ever published to this test (its server certificate moves to the
// new anchor at activation).
func caHTTPS(ca *testca.CA) *http.Client {
	seenMu.Lock()
	defer seenMu.Unlock()
	pool := x509.NewCertPool()
	for _, r := range append(ca.Roots, seenRoots[ca]...) {
		pool.AddCert(r)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
}

var (
	seenMu    sync.Mutex
	seenRoots = map[*testca.CA][]*x509.Certificate{}
)

func caRoots(t *testing.T, ca *testca.CA) []*x509.Certificate {
	t.Helper()
	status, b := getBody(t, caHTTPS(ca), ca.URL+"/v1/roots")
	if status != http.StatusOK {
		t.Fatalf("/v1/roots: %d", status)
	}
	roots := parseCerts(t, b)
	seenMu.Lock()
	seenRoots[ca] = append(seenRoots[ca], roots...)
	seenMu.Unlock()
	return roots
}

func bundleSequence(t *testing.T, ca *testca.CA) uint64 {
	t.Helper()
	status, b := getBody(t, caHTTPS(ca), ca.URL+"/v1/bundle")
	if status != http.StatusOK {
		t.Fatalf("/v1/bundle: %d", status)
	}
	bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), b)
	if err != nil {
		t.Fatal(err)
	}
	seq, ok := bundle.SequenceNumber()
	if !ok {
		t.Fatal("bundle without spiffe_sequence")
	}
	return seq
}

// ocspStatus asks the CA's responder about leaf (issued by issuer).
func ocspStatus(t *testing.T, ca *testca.CA, leaf, issuer *x509.Certificate) int {
	t.Helper()
	req, err := xocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(ca.HTTPURL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r, err := xocsp.ParseResponseForCert(b, leaf, issuer)
	if err != nil {
		t.Fatalf("OCSP response for %x: %v", leaf.SerialNumber, err)
	}
	return r.Status
}

type rotationMode struct {
	name                        string
	intermediateOnly, crossSign bool
}

// TestAnchorRotation is the live rotation: two services renew every few
// seconds and talk mTLS through the verify library while the operator
// stages a new anchor, waits, activates it, waits until the old issuing
// CA's certificates expired, and retires it. Not one handshake may fail.
func TestAnchorRotation(t *testing.T) {
	for _, mode := range []rotationMode{{name: "root"}, {name: "intermediate-only", intermediateOnly: true}, {name: "cross-sign", crossSign: true}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testRotation(t, mode)
		})
	}
}

func testRotation(t *testing.T, mode rotationMode) {
	ca := rotationCA(t)
	oldRoots := ca.Roots
	serverID := spiffeid.RequireFromString("spiffe://example.org/svc/server")
	clientID := spiffeid.RequireFromString("spiffe://example.org/svc/client")
	var serverRenewals, clientRenewals atomic.Int32
	server := rotationAgent(t, ca, serverID.String(), func(*agent.Credentials) { serverRenewals.Add(1) })
	client := rotationAgent(t, ca, clientID.String(), func(*agent.Credentials) { clientRenewals.Add(1) })
	conv := startConversation(t, "following", server, client,
		newVerifier(t, ca, nil, tlsconfig.AuthorizeID(clientID)), newVerifier(t, ca, nil, tlsconfig.AuthorizeID(serverID)))
	convs := []*conversation{conv}
	if mode.crossSign {
		// A relying service that only ever had the old root: with the
		// cross-signed certificate in every new chain it still
		// verifies the new leaves.
		convs = append(convs, startConversation(t, "old-root-only", server, client,
			newVerifier(t, ca, oldRoots, tlsconfig.AuthorizeID(clientID)), newVerifier(t, ca, nil, tlsconfig.AuthorizeID(serverID))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range convs {
		wg.Go(func() { c.run(ctx, clientID.String()) })
	}
	defer func() { cancel(); wg.Wait() }()

	var all []wire.AnchorStatus
	if status, body := ca.Admin(t, http.MethodGet, "/admin/v1/anchors", nil, &all); status != http.StatusOK || len(all) != 1 || all[0].State != "active" {
		t.Fatalf("anchors at start: %d %s", status, body)
	}
	old := all[0]
	oldIssuer := server.Current().Chain[0]
	seq := bundleSequence(t, ca)

	// Stage: the new root is published at once.
	var staged wire.AnchorStatus
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/stage",
		wire.StageRequest{IntermediateOnly: mode.intermediateOnly, CrossSign: mode.crossSign}, &staged); status != http.StatusCreated {
		t.Fatalf("stage: %d %s", status, body)
	}
	stagedAt := time.Now()
	if staged.State != "staged" || staged.CrossSigned != mode.crossSign || staged.SafeToActivate {
		t.Fatalf("staged anchor: %+v", staged)
	}
	if got := bundleSequence(t, ca); got <= seq {
		t.Fatalf("spiffe_sequence %d after stage, want above %d", got, seq)
	}
	roots := caRoots(t, ca)
	wantRoots := 2
	if mode.intermediateOnly {
		wantRoots = 1
		if staged.RootSHA256 != old.RootSHA256 {
			t.Fatalf("intermediate-only anchor has a new root %s", staged.RootSHA256)
		}
	}
	if len(roots) != wantRoots {
		t.Fatalf("/v1/roots lists %d roots after stage, want %d", len(roots), wantRoots)
	}
	// Too early: agents may not have the new root yet.
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/activate", wire.AnchorRequest{ID: staged.ID}, nil); status != http.StatusConflict ||
		!bytes.Contains(body, []byte(api.CodeAnchorUnsafe)) {
		t.Fatalf("activate right after stage: %d %s, want 409 %s", status, body, api.CodeAnchorUnsafe)
	}
	// Wait one longest leaf lifetime, and until both agents renewed
	// (and so refreshed their bundle) since staging.
	s0, c0 := serverRenewals.Load(), clientRenewals.Load()
	waitFor(t, 4*rotTTL, "both agents renew after staging", func() bool {
		return serverRenewals.Load() > s0 && clientRenewals.Load() > c0 && time.Since(stagedAt) > rotTTL
	})
	if st := anchorStatus(t, ca, staged.ID); !st.SafeToActivate {
		t.Fatalf("anchor %s not safe to activate one leaf lifetime after staging: %+v", staged.ID, st)
	}
	// A leaf of the old issuing CA, a whole lifetime left at activation.
	hc, err := agent.NewClient(ca.URL, ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	oldCreds, err := hc.Sign(context.Background(), "join", ca.Token(t, "spiffe://example.org/svc/old"), newECKey(t), rotTTL)
	if err != nil {
		t.Fatalf("sign before activation: %v", err)
	}
	oldLeaf := oldCreds.Leaf
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/activate", wire.AnchorRequest{ID: staged.ID}, nil); status != http.StatusOK {
		t.Fatalf("activate: %d %s", status, body)
	}
	if st := anchorStatus(t, ca, old.ID); st.State != "retiring" || st.Unexpired == 0 {
		t.Fatalf("old anchor after activate: %+v", st)
	}
	// The old issuing CA still answers for its unexpired certificates
	// and retire is refused meanwhile.
	if st := ocspStatus(t, ca, oldLeaf, oldIssuer); st != xocsp.Good {
		t.Fatalf("OCSP for an old, unexpired leaf after activation: status %d", st)
	}
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/retire", wire.AnchorRequest{ID: old.ID}, nil); status != http.StatusConflict ||
		!bytes.Contains(body, []byte(api.CodeAnchorUnsafe)) {
		t.Fatalf("retire with valid certificates: %d %s, want 409 %s", status, body, api.CodeAnchorUnsafe)
	}
	// Everything issued from now on chains to the new anchor.
	waitFor(t, 3*rotTTL, "both agents hold certificates of the new issuing CA", func() bool {
		for _, s := range []*agent.Source{server, client} {
			if fmt.Sprintf("%x", s.Current().Leaf.AuthorityKeyId) != staged.IssuerSKI {
				return false
			}
		}
		return true
	})
	newLeaf := client.Current()
	newRoots := caRoots(t, ca)
	var newRoot *x509.Certificate
	for _, r := range newRoots {
		if sha256Hex(r.Raw) == staged.RootSHA256 {
			newRoot = r
		}
	}
	if newRoot == nil {
		t.Fatal("the new root is not in /v1/roots")
	}
	onlyNew := x509.NewCertPool()
	onlyNew.AddCert(newRoot)
	inter := x509.NewCertPool()
	for _, c := range newLeaf.Chain {
		inter.AddCert(c)
	}
	if _, err := newLeaf.Leaf.Verify(x509.VerifyOptions{Roots: onlyNew, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("a leaf issued after activate does not chain to the new root: %v", err)
	}
	if mode.crossSign {
		onlyOld := x509.NewCertPool()
		onlyOld.AddCert(oldRoots[0])
		if _, err := newLeaf.Leaf.Verify(x509.VerifyOptions{Roots: onlyOld, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("a new leaf does not chain to the old root through the cross-signed certificate: %v", err)
		}
	}

	crlURL := ca.HTTPURL + "/crl/" + old.IssuerSKI
	if status, b := getBody(t, http.DefaultClient, crlURL); status != http.StatusOK {
		t.Fatalf("old issuer's CRL: %d", status)
	} else if crl, err := x509.ParseRevocationList(b); err != nil || crl.CheckSignatureFrom(oldIssuer) != nil {
		t.Fatalf("old issuer's CRL does not verify: %v", err)
	}
	waitFor(t, 3*rotTTL, "the old issuing CA's certificates expire", func() bool {
		return anchorStatus(t, ca, old.ID).SafeToRetire
	})
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/retire", wire.AnchorRequest{ID: old.ID}, nil); status != http.StatusOK {
		t.Fatalf("retire: %d %s", status, body)
	}
	after := caRoots(t, ca)
	if mode.intermediateOnly {
		if len(after) != 1 || !after[0].Equal(oldRoots[0]) {
			t.Fatalf("intermediate-only: /v1/roots after retire has %d roots", len(after))
		}
	} else if len(after) != 1 || !after[0].Equal(newRoot) {
		t.Fatalf("/v1/roots after retire: %d roots, want only the new one", len(after))
	}
	if status, _ := getBody(t, http.DefaultClient, crlURL); status != http.StatusNotFound {
		t.Fatalf("retired issuer's CRL: %d, want 404", status)
	}
	// OCSP no longer answers for the retired issuer; its certificate is
	// still served (leaves in the log name it in caIssuers).
	req, err := xocsp.CreateRequest(oldLeaf, oldIssuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(ca.HTTPURL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var re xocsp.ResponseError
	if _, err := xocsp.ParseResponse(body, oldIssuer); !errors.As(err, &re) || re.Status != xocsp.Unauthorized {
		t.Fatalf("OCSP for the retired issuer: %v, want unauthorized", err)
	}
	if status, _ := getBody(t, http.DefaultClient, ca.HTTPURL+"/ca/"+old.IssuerSKI+".crt"); status != http.StatusOK {
		t.Fatalf("the retired issuer's caIssuers URL: %d, want 200", status)
	}
	// Keep talking for a renewal more after the retirement.
	s1 := serverRenewals.Load()
	waitFor(t, 3*rotTTL, "a renewal after retirement", func() bool { return serverRenewals.Load() > s1 })
	cancel()
	wg.Wait()
	for _, c := range convs {
		n, f := c.handshakes.Load(), c.failures.Load()
		if f != 0 {
			t.Errorf("%s: %d of %d handshakes failed during the rotation:\n%v", c.name, f, n, c.errs)
		}
		// At least a few per second of the rotation: on a loaded 2-core
		// machine under -race a handshake (with OCSP) takes up to 200 ms.
		if n < 40 {
			t.Errorf("%s: only %d handshakes", c.name, n)
		}
		t.Logf("%s: %d handshakes, %d failed; %d server and %d client renewals", c.name, n, f, serverRenewals.Load(), clientRenewals.Load())
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Between renewals, agents and relying services follow the bundle's
// spiffe_refresh_hint: a staged root reaches them without a renewal.
func TestBundleRefreshHint(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: func(c *config.Config) {
		c.Leaf.MinTTL = config.Duration(rotMinTTL)
		c.Leaf.DefaultTTL = config.Duration(4 * time.Second) // refresh hint: 2 s
	}})
	var renewals atomic.Int32
	token := ca.Token(t, "spiffe://example.org/svc/hint")
	src, err := agent.NewSource(context.Background(), agent.Config{
		CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join", TTL: time.Hour,
		Attest:  func(context.Context) (string, error) { return token, nil },
		OnRenew: func(*agent.Credentials) { renewals.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots, BundleURL: ca.URL + "/v1/bundle"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatalf("first bundle refresh: %v", err)
	}
	before := renewals.Load()
	var staged wire.AnchorStatus
	if status, body := ca.Admin(t, http.MethodPost, "/admin/v1/anchors/stage", wire.StageRequest{}, &staged); status != http.StatusCreated {
		t.Fatalf("stage: %d %s", status, body)
	}
	waitFor(t, 15*time.Second, "the agent and the verifier to trust the staged root", func() bool {
		return len(src.Roots()) == 2 && len(v.Roots()) == 2
	})
	if renewals.Load() != before {
		t.Fatalf("the agent renewed (%d → %d): the bundle came with a renewal, not the refresh hint", before, renewals.Load())
	}
}
