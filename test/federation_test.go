package test

// SPIFFE federation between two real CAs (docs/federation.md): a.example
// and b.example, each fetching the other's bundle over https_spiffe,
// starting from a bootstrap bundle.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/verify"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	tdA = spiffeid.RequireTrustDomainFromString("a.example")
	tdB = spiffeid.RequireTrustDomainFromString("b.example")
)

// fedLeaf are the leaf lifetimes of the federation tests: a rotation of
// b.example takes about half a minute; the bundles' refresh hint is half
// the default lifetime, 3 s.
var fedLeaf = map[string]string{"min_ttl": "2s", "default_ttl": "6s", "max_ttl": "6s"}

// federatedPair makes a.example and b.example, each federated with the
// other over https_spiffe from a bootstrap bundle made of the other's
// roots.pem (the out-of-band exchange an operator does), and starts them.
func federatedPair(t *testing.T) (a, b *testCA) {
	a = newCA(t, caOptions{trustDomain: "a.example", leaf: fedLeaf})
	b = newCA(t, caOptions{trustDomain: "b.example", leaf: fedLeaf})
	federate(t, a, b)
	federate(t, b, a)
	a.start()
	b.start()
	return a, b
}

// federate lists peer in c's federation, with a bootstrap bundle file.
func federate(t *testing.T, c, peer *testCA) {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(peer.TrustDomain)
	raw, err := spiffebundle.FromX509Authorities(td, peer.Roots).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(c.Dir, peer.TrustDomain+".bundle.json"), raw)
	c.editConfig(func(cfg map[string]any) {
		cfg["federation"] = []any{map[string]any{
			"trust_domain": peer.TrustDomain, "bundle_endpoint_url": peer.URL + "/v1/bundle", "profile": "https_spiffe",
			"endpoint_spiffe_id": "spiffe://" + peer.TrustDomain + "/agentca/server",
			"bootstrap_bundle":   peer.TrustDomain + ".bundle.json", "refresh_min": "1s", "refresh_max": "1s"}}
		cfg["jwt_svid"] = map[string]any{"max_ttl": "2s"} // so that retire waits seconds, not an hour
	})
}

// foreignBundle is c's copy of td's bundle, from /v1/bundle?trust_domain=.
func foreignBundle(t *testing.T, c *testCA, td spiffeid.TrustDomain) (int, *spiffebundle.Bundle) {
	t.Helper()
	resp, err := c.client(nil).Get(c.URL + "/v1/bundle?trust_domain=" + td.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		t.Fatalf("/v1/bundle?trust_domain=%s: %v\n%s", td, err, body)
	}
	return resp.StatusCode, b
}

// fedSource is an agent of c whose bundles include federatesWith's.
func fedSource(t *testing.T, c *testCA, id string, federatesWith string) *agent.Source {
	t.Helper()
	token := c.token(id)
	src, err := agent.NewSource(context.Background(), agent.Config{CAURL: c.URL, Roots: c.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return token, nil }, FederatesWith: []string{federatesWith},
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatalf("agent %s: %v", id, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// fedConversation is a server of one trust domain and a client of the
// other talking mTLS through go-spiffe's tlsconfig, each authorising the
// other's trust domain only: one new handshake per request.
type fedConversation struct {
	name               string
	url                string
	client             *http.Client
	want               string
	requests, failures atomic.Int64
	mu                 sync.Mutex
	errs               []string
}

func startFedConversation(t *testing.T, name string, server, client *agent.Source, serverTD, clientTD spiffeid.TrustDomain) *fedConversation {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: tlsconfig.MTLSServerConfig(server, server, tlsconfig.AuthorizeMemberOf(clientTD)),
		ReadHeaderTimeout: 5 * time.Second,
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
	return &fedConversation{name: name, url: "https://" + ln.Addr().String() + "/", want: client.Current().SPIFFEID,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: tlsconfig.MTLSClientConfig(client, client, tlsconfig.AuthorizeMemberOf(serverTD)), DisableKeepAlives: true}}}
}

func (c *fedConversation) once() error {
	c.requests.Add(1)
	resp, err := c.client.Get(c.url)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "spiffe://") {
			err = fmt.Errorf("%s %q", resp.Status, body)
		}
	}
	if err != nil {
		c.failures.Add(1)
		c.mu.Lock()
		c.errs = append(c.errs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		c.mu.Unlock()
	}
	return err
}

func (c *fedConversation) run(ctx context.Context) {
	for ctx.Err() == nil {
		_ = c.once()
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *fedConversation) check(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("%s: %d handshakes, %d failed", c.name, c.requests.Load(), c.failures.Load())
	if c.failures.Load() > 0 {
		t.Errorf("%s: %d of %d handshakes failed:\n%s", c.name, c.failures.Load(), c.requests.Load(), strings.Join(c.errs, "\n"))
	}
}

// anchorsJSON is `agentca anchors list --json`.
func anchorsJSON(t *testing.T, c *testCA) []struct{ ID, State, RootSHA256 string } {
	t.Helper()
	var out []struct {
		ID         string `json:"id"`
		State      string `json:"state"`
		RootSHA256 string `json:"root_sha256"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", c.Dir).stdout), &out); err != nil {
		t.Fatal(err)
	}
	res := make([]struct{ ID, State, RootSHA256 string }, len(out))
	for i, a := range out {
		res[i] = struct{ ID, State, RootSHA256 string }{a.ID, a.State, a.RootSHA256}
	}
	return res
}

// retryCLI runs the CLI until it exits 0 (an anchor transition refused
// while unsafe), for at most timeout.
func retryCLI(t *testing.T, timeout time.Duration, args ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := runCLI(t, args...)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after %s:\n%s", timeout, r)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func rootSet(b *spiffebundle.Bundle) []string {
	var out []string
	for _, r := range b.X509Authorities() {
		out = append(out, sha256Hex(r.Raw))
	}
	slices.Sort(out)
	return out
}

func sourceRoots(t *testing.T, src *agent.Source, td spiffeid.TrustDomain) []string {
	t.Helper()
	b, err := src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range b.X509Authorities() {
		out = append(out, sha256Hex(r.Raw))
	}
	slices.Sort(out)
	return out
}

// TestFederation: an a.example agent and a b.example service (and the
// reverse) complete mTLS through go-spiffe's tlsconfig, each authorising
// the other trust domain; b.example rotates its trust anchor (stage,
// activate, retire, with `agentca anchors`) while they talk, the a.example
// side follows within the refresh hint, and not one handshake fails.
func TestFederation(t *testing.T) {
	a, b := federatedPair(t)
	// Each CA serves the other's bundle, from the bootstrap or the
	// first fetch, and refuses trust domains it is not federated with.
	for _, c := range []struct {
		ca   *testCA
		peer *testCA
		td   spiffeid.TrustDomain
	}{{a, b, tdB}, {b, a, tdA}} {
		status, got := foreignBundle(t, c.ca, c.td)
		if status != http.StatusOK || !slices.Equal(rootSet(got), rootSet(spiffebundle.FromX509Authorities(c.td, c.peer.Roots))) {
			t.Fatalf("%s's bundle of %s: %d %v", c.ca.TrustDomain, c.td, status, got)
		}
	}
	if status, _ := foreignBundle(t, a, spiffeid.RequireTrustDomainFromString("c.example")); status != http.StatusNotFound {
		t.Fatalf("a bundle of a trust domain not federated: %d, want 404", status)
	}
	// The first fetch brings b's JWT-SVID keys too (the bootstrap had
	// its X.509 authorities only).
	waitFor(t, 15*time.Second, "a.example to fetch b.example's bundle with its JWT keys", func() bool {
		_, got := foreignBundle(t, a, tdB)
		return got != nil && len(got.JWTAuthorities()) > 0
	})

	aAgent := fedSource(t, a, "spiffe://a.example/agent/x", "b.example")
	bService := fedSource(t, b, "spiffe://b.example/svc/tool", "a.example")
	aService := fedSource(t, a, "spiffe://a.example/svc/api", "b.example")
	bAgent := fedSource(t, b, "spiffe://b.example/agent/y", "a.example")
	aToB := startFedConversation(t, "a.example agent -> b.example service", bService, aAgent, tdB, tdA)
	bToA := startFedConversation(t, "b.example agent -> a.example service", aService, bAgent, tdA, tdB)
	for _, c := range []*fedConversation{aToB, bToA} {
		if err := c.once(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	// Without the federated bundle, the same peers are refused.
	plain := plainSource(t, a, "spiffe://a.example/agent/plain")
	lone := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(plain, plain, tlsconfig.AuthorizeMemberOf(tdB)), DisableKeepAlives: true}}
	if resp, err := lone.Get(aToB.url); err == nil {
		resp.Body.Close()
		t.Fatal("an a.example agent without b.example's bundle completed a handshake with a b.example service")
	}
	// And an a.example agent is not a b.example member: authorising
	// b.example only refuses it.
	wrong := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(aAgent, aAgent, tlsconfig.AuthorizeMemberOf(tdA)), DisableKeepAlives: true}}
	if resp, err := wrong.Get(aToB.url); err == nil {
		resp.Body.Close()
		t.Fatal("a client authorising a.example only accepted a b.example server")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range []*fedConversation{aToB, bToA} {
		wg.Go(func() { c.run(ctx) })
	}
	stopped := false
	stopConversations := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	defer stopConversations()

	// b.example rotates: stage. Its new root reaches a.example's CA and
	// a.example's agent within the refresh hint (3 s), plus one fetch.
	before := anchorsJSON(t, b)
	if len(before) != 1 {
		t.Fatalf("b.example anchors at start: %+v", before)
	}
	oldID := before[0].ID
	mustRun(t, "anchors", "stage", "--dir", b.Dir)
	_, own := ownBundle(t, b)
	if len(own.X509Authorities()) != 2 {
		t.Fatalf("b.example publishes %d roots after stage, want 2", len(own.X509Authorities()))
	}
	hint, _ := own.RefreshHint()
	if hint <= 0 || hint > 5*time.Second {
		t.Fatalf("b.example's refresh hint %s", hint)
	}
	stagedAt := time.Now()
	want := rootSet(own)
	newR := newRoot(t, own, b.Roots)
	b.Roots = append(b.Roots, newR) // the test's clients of b's CA trust it too
	waitFor(t, hint+2*time.Second, "a.example's CA to hold b.example's staged root", func() bool {
		_, got := foreignBundle(t, a, tdB)
		return slices.Equal(rootSet(got), want)
	})
	waitFor(t, hint+2*time.Second, "a.example's agent to hold b.example's staged root", func() bool {
		return slices.Equal(sourceRoots(t, aAgent, tdB), want)
	})
	t.Logf("a.example followed b.example's stage in %s (refresh hint %s)", time.Since(stagedAt).Round(time.Millisecond), hint)

	// Activate (refused until one leaf lifetime after staging), then
	// retire the old anchor once its last certificate expired.
	var newID string
	for _, an := range anchorsJSON(t, b) {
		if an.ID != oldID {
			newID = an.ID
		}
	}
	retryCLI(t, 40*time.Second, "anchors", "activate", "--dir", b.Dir, newID)
	waitFor(t, 20*time.Second, "the b.example service to renew under the new anchor", func() bool {
		return issuedUnder(bService.Current(), newR)
	})
	retryCLI(t, 40*time.Second, "anchors", "retire", "--dir", b.Dir, oldID)
	retiredAt := time.Now()
	_, own = ownBundle(t, b)
	want = rootSet(own)
	if len(want) != 1 {
		t.Fatalf("b.example publishes %d roots after retire, want 1", len(want))
	}
	waitFor(t, hint+2*time.Second, "a.example's agent to drop b.example's retired root", func() bool {
		_, got := foreignBundle(t, a, tdB)
		return slices.Equal(rootSet(got), want) && slices.Equal(sourceRoots(t, aAgent, tdB), want)
	})
	t.Logf("a.example followed b.example's retire in %s", time.Since(retiredAt).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // handshakes on the new anchor alone
	stopConversations()
	for _, c := range []*fedConversation{aToB, bToA} {
		c.check(t)
		if c.requests.Load() < 50 {
			t.Errorf("%s: only %d handshakes", c.name, c.requests.Load())
		}
	}
}

// plainSource is an agent of c without federation.
func plainSource(t *testing.T, c *testCA, id string) *agent.Source {
	t.Helper()
	token := c.token(id)
	src, err := agent.NewSource(context.Background(), agent.Config{CAURL: c.URL, Roots: c.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return token, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// ownBundle is c's own /v1/bundle.
func ownBundle(t *testing.T, c *testCA) (int, *spiffebundle.Bundle) {
	t.Helper()
	resp, err := c.client(nil).Get(c.URL + "/v1/bundle")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	td := spiffeid.RequireTrustDomainFromString(c.TrustDomain)
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// newRoot is the root of bundle that is not among old.
func newRoot(t *testing.T, bundle *spiffebundle.Bundle, old []*x509.Certificate) *x509.Certificate {
	t.Helper()
	for _, r := range bundle.X509Authorities() {
		if !slices.ContainsFunc(old, r.Equal) {
			return r
		}
	}
	t.Fatal("no new root in the bundle")
	return nil
}

// issuedUnder reports whether cr's chain verifies to root.
func issuedUnder(cr *agent.Credentials, root *x509.Certificate) bool {
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(root)
	for _, c := range cr.Chain {
		inter.AddCert(c)
	}
	_, err := cr.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// fedMetric reads one agentca_federation_* sample of c's /metrics.
func fedMetric(t *testing.T, c *testCA, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s{%s}", name, labels)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFederationEndpoint: go-spiffe's federation.FetchBundle reads our
// bundle endpoint (https_spiffe and https_web, and a CA's copy of a
// federated bundle); enroll --federates-with writes bundle.<td>.pem and
// verify accepts a federated peer from it; a failed fetch keeps the last
// good bundle (also across a restart, from the store), with a WARN and
// the agentca_federation_* metrics, until the endpoint is back.
func TestFederationEndpoint(t *testing.T) {
	a, b := federatedPair(t)
	ctx := context.Background()
	bootB := spiffebundle.FromX509Authorities(tdB, b.Roots)
	serverB := spiffeid.RequireFromString("spiffe://b.example/agentca/server")
	got, err := federation.FetchBundle(ctx, tdB, b.URL+"/v1/bundle", federation.WithSPIFFEAuth(bootB, serverB))
	if err != nil {
		t.Fatalf("go-spiffe FetchBundle, https_spiffe: %v", err)
	}
	if hint, ok := got.RefreshHint(); !ok || hint != 3*time.Second || len(got.JWTAuthorities()) != 1 ||
		!slices.Equal(rootSet(got), rootSet(bootB)) {
		t.Fatalf("b.example's bundle: hint %s, %d JWT keys, roots %v", hint, len(got.JWTAuthorities()), rootSet(got))
	}
	if _, err := federation.FetchBundle(ctx, tdB, b.URL+"/v1/bundle",
		federation.WithSPIFFEAuth(bootB, spiffeid.RequireFromString("spiffe://b.example/not-the-server"))); err == nil {
		t.Fatal("FetchBundle accepted an endpoint with another SPIFFE ID")
	}
	if _, err := federation.FetchBundle(ctx, tdB, b.URL+"/v1/bundle",
		federation.WithSPIFFEAuth(spiffebundle.FromX509Authorities(tdB, a.Roots), serverB)); err == nil {
		t.Fatal("FetchBundle accepted an endpoint that does not chain to the bundle")
	}
	if _, err := federation.FetchBundle(ctx, tdB, b.URL+"/v1/bundle", federation.WithWebPKIRoots(b.pool())); err != nil {
		t.Fatalf("go-spiffe FetchBundle, https_web: %v", err)
	}
	// a.example's copy of b.example's bundle, through a.example's
	// endpoint, authenticated as a.example's server.
	viaA, err := federation.FetchBundle(ctx, tdB, a.URL+"/v1/bundle?trust_domain=b.example",
		federation.WithSPIFFEAuth(spiffebundle.FromX509Authorities(tdA, a.Roots), spiffeid.RequireFromString("spiffe://a.example/agentca/server")))
	if err != nil || !slices.Equal(rootSet(viaA), rootSet(bootB)) {
		t.Fatalf("b.example's bundle through a.example: %v", err)
	}
	for _, q := range []string{"trust_domain=B.example", "trust_domain=spiffe://b.example", "x=1", "trust_domain=b.example&trust_domain=c.example"} {
		resp, err := a.client(nil).Get(a.URL + "/v1/bundle?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/v1/bundle?%s: %d, want 400", q, resp.StatusCode)
		}
	}

	// enroll writes bundle.b.example.pem; a relying service of a.example
	// verifies a b.example peer with it.
	waitFor(t, 15*time.Second, "a.example to fetch b.example's bundle", func() bool {
		return fedMetric(t, a, "agentca_federation_fetches_total", `result="ok",trust_domain="b.example"`) > 0
	})
	aDir, bDir := filepath.Join(t.TempDir(), "a-agent"), filepath.Join(t.TempDir(), "b-agent")
	if r := a.enroll(a.token("spiffe://a.example/agent/files"), aDir, "--federates-with", "b.example"); r.code != 0 {
		t.Fatalf("enroll --federates-with:\n%s", r)
	}
	pemB, err := os.ReadFile(filepath.Join(aDir, "bundle.b.example.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if roots := parseCerts(t, pemB); len(roots) != 1 || !roots[0].Equal(b.Roots[0]) {
		t.Fatalf("bundle.b.example.pem holds %d certificates, not b.example's root", len(roots))
	}
	if r := a.enroll(a.token("spiffe://a.example/agent/bad"), aDir, "--federates-with", "spiffe://b.example"); r.code != 2 {
		t.Fatalf("enroll with a bad --federates-with: want exit 2:\n%s", r)
	}
	if r := b.enroll(b.token("spiffe://b.example/svc/peer"), bDir); r.code != 0 {
		t.Fatalf("enroll in b.example:\n%s", r)
	}
	peer := readCreds(t, bDir)
	v, err := verify.New(verify.Options{TrustDomain: "a.example", BundleFile: filepath.Join(aDir, "bundle.pem"), FederatesWith: []string{"b.example"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if id, err := v.VerifyPeer(ctx, peer.tlsCert().Certificate, nil); err != nil || id.String() != "spiffe://b.example/svc/peer" {
		t.Fatalf("verify with FederatesWith b.example: %v %v", id, err)
	}
	viaURL, err := verify.New(verify.Options{TrustDomain: "a.example", Roots: a.Roots, BundleURL: a.URL + "/v1/bundle", FederatesWith: []string{"b.example"}})
	if err != nil {
		t.Fatal(err)
	}
	defer viaURL.Close()
	if _, err := viaURL.VerifyPeer(ctx, peer.tlsCert().Certificate, nil); err != nil {
		t.Fatalf("verify with FederatesWith b.example from BundleURL: %v", err)
	}
	if _, err := verify.New(verify.Options{TrustDomain: "a.example", Roots: a.Roots, BundleURL: a.URL + "/v1/bundle",
		FederatesWith: []string{"c.example"}}); err == nil {
		t.Fatal("verify.New with a trust domain the CA is not federated with succeeded")
	}
	alone, err := verify.New(verify.Options{TrustDomain: "a.example", BundleFile: filepath.Join(aDir, "bundle.pem")})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	if _, err := alone.VerifyPeer(ctx, peer.tlsCert().Certificate, nil); err == nil {
		t.Fatal("verify without FederatesWith accepted a b.example peer")
	}

	// b.example's endpoint goes away: a.example keeps the last good
	// bundle, says so after one refresh interval, and serves it.
	_, last := foreignBundle(t, a, tdB)
	b.stop()
	waitFor(t, 10*time.Second, "agentca_federation_bundle_stale 1", func() bool {
		return fedMetric(t, a, "agentca_federation_bundle_stale", `trust_domain="b.example"`) == 1
	})
	if !strings.Contains(a.proc.log(), `level=WARN msg="cannot fetch the bundle of a federated trust domain; keeping the last good one" trust_domain=b.example`) {
		t.Errorf("no WARN line in a.example's log:\n%s", a.proc.log())
	}
	if status, kept := foreignBundle(t, a, tdB); status != http.StatusOK || !kept.Equal(last) {
		t.Fatalf("during the outage a.example serves %d %v, want the last good bundle", status, kept)
	}
	if fedMetric(t, a, "agentca_federation_fetches_total", `result="error",trust_domain="b.example"`) < 1 {
		t.Error("no failed fetch counted")
	}
	if age := fedMetric(t, a, "agentca_federation_bundle_age_seconds", `trust_domain="b.example"`); age < 1 {
		t.Errorf("agentca_federation_bundle_age_seconds %v during the outage, want at least one refresh interval", age)
	}
	// A restart during the outage starts from the stored bundle (with
	// the JWT keys only a fetch brought), not the bootstrap file.
	a.stop()
	a.start()
	if status, kept := foreignBundle(t, a, tdB); status != http.StatusOK || !kept.Equal(last) || len(kept.JWTAuthorities()) == 0 {
		t.Fatalf("after a restart during the outage a.example serves %d %v, want the stored bundle", status, kept)
	}
	b.start()
	waitFor(t, 10*time.Second, "agentca_federation_bundle_stale 0 once b.example is back", func() bool {
		return fedMetric(t, a, "agentca_federation_bundle_stale", `trust_domain="b.example"`) == 0 &&
			fedMetric(t, a, "agentca_federation_fetches_total", `result="ok",trust_domain="b.example"`) > 0
	})
}

// TestFederationWorkloadAPI: the node agent (--federates-with b.example)
// hands b.example's bundle to a.example workloads through the Workload
// API (federated_bundles, FetchX509Bundles), writes bundle.b.example.pem
// in its data directory, and a workload using go-spiffe's workloadapi
// completes mTLS with a b.example service.
func TestFederationWorkloadAPI(t *testing.T) {
	a, b := federatedPair(t)
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	mustRun(t, "workloads", "create", "--dir", a.Dir, "--spiffe-id", "spiffe://a.example/svc/wl", "--selector", uid, "--node-provisioner", "join")
	dataDir := filepath.Join(t.TempDir(), "node")
	sockDir, err := os.MkdirTemp("", "agentca-fed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "agent.sock")
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, []byte(a.token("spiffe://a.example/node/n1")+"\n"))
	p := startProc(t, "agentca agent", filepath.Join(t.TempDir(), "agent.log"), "agent", "--ca", a.URL, "--root", a.rootsFile(),
		"--token-file", tokFile, "--data-dir", dataDir, "--socket", sock, "--poll-interval", "200ms", "--federates-with", "b.example")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agentca agent log:\n%s", p.log())
		}
	})
	eventually(t, 20*time.Second, 50*time.Millisecond, "the agent's socket", func() bool {
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode().Type() == os.ModeSocket && !p.exited()
	})
	if roots := parseCerts(t, mustReadFile(t, filepath.Join(dataDir, "bundle.b.example.pem"))); len(roots) != 1 || !roots[0].Equal(b.Roots[0]) {
		t.Fatalf("the node agent's bundle.b.example.pem is not b.example's root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + sock)
	xc, err := workloadapi.FetchX509Context(ctx, addr)
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	if len(xc.SVIDs) != 1 || xc.SVIDs[0].ID.String() != "spiffe://a.example/svc/wl" {
		t.Fatalf("SVIDs: %+v", xc.SVIDs)
	}
	for _, td := range []spiffeid.TrustDomain{tdA, tdB} {
		if _, ok := xc.Bundles.Get(td); !ok {
			t.Errorf("the X.509 context has no bundle of %s", td)
		}
	}
	if fb, ok := xc.Bundles.Get(tdB); ok && (len(fb.X509Authorities()) != 1 || !fb.X509Authorities()[0].Equal(b.Roots[0])) {
		t.Errorf("b.example's federated bundle is not its root")
	}
	bundles, err := workloadapi.FetchX509Bundles(ctx, addr)
	if err != nil || bundles.Len() != 2 || !bundles.Has(tdB) {
		t.Fatalf("FetchX509Bundles: %v, %d bundles", err, bundles.Len())
	}

	// Envoy SDS: "ALL" is Envoy's SPIFFE certificate validator with one
	// bundle per trust domain (never one merged trusted_ca).
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sds, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ALL"}})
	if err != nil || len(sds.Resources) != 1 {
		t.Fatalf("SDS ALL: %v, %d resources", err, len(sds.GetResources()))
	}
	var secret tlsv3.Secret
	var validator tlsv3.SPIFFECertValidatorConfig
	if err := sds.Resources[0].UnmarshalTo(&secret); err != nil {
		t.Fatal(err)
	}
	custom := secret.GetValidationContext().GetCustomValidatorConfig()
	if secret.Name != "ALL" || custom.GetName() != "envoy.tls.cert_validator.spiffe" {
		t.Fatalf("SDS ALL: %v", &secret)
	}
	if err := custom.GetTypedConfig().UnmarshalTo(&validator); err != nil {
		t.Fatal(err)
	}
	perTD := map[string][]*x509.Certificate{}
	for _, d := range validator.TrustDomains {
		perTD[d.Name] = parseCerts(t, d.GetTrustBundle().GetInlineBytes())
	}
	if len(perTD) != 2 || len(perTD["b.example"]) != 1 || !perTD["b.example"][0].Equal(b.Roots[0]) ||
		len(perTD["a.example"]) != 1 || !perTD["a.example"][0].Equal(a.Roots[0]) {
		t.Fatalf("SDS ALL trust domains: %v", perTD)
	}

	// The workload and a b.example service: mTLS both authorising the
	// other's trust domain.
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	service := fedSource(t, b, "spiffe://b.example/svc/tool", "a.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: tlsconfig.MTLSServerConfig(service, service, tlsconfig.AuthorizeMemberOf(tdA)), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _ := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			fmt.Fprint(w, id.String())
		})}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeMemberOf(tdB)), DisableKeepAlives: true}}
	resp, err := hc.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("the a.example workload calling the b.example service: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "spiffe://a.example/svc/wl" {
		t.Fatalf("the service saw %q", body)
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
