package test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestWorkloadAPIJWT runs `agentca serve` and `agentca agent`, and
// go-spiffe's workloadapi client in the test process (a definition for
// its uid): FetchJWTSVID for an audience, checked by go-spiffe against
// /v1/bundle and by go-oidc through discovery; the CA's runtime policy
// refuses an audience through the agent; ValidateJWTSVID and
// FetchJWTBundles; an anchor rotation reaches the JWT bundle stream, and
// after retirement the old key's token is refused everywhere.
func TestWorkloadAPIJWT(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "2s"}})
	withPolicy(ca, `{"rules": [{"name": "no-payments", "endpoints": ["jwt-svid"], "when": "'https://payments.example.org' in audience", "effect": "deny"}]}`)
	ca.start()
	const me = "spiffe://example.org/svc/me"
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "me", "--spiffe-id", me,
		"--selector", "unix:uid:"+strconv.Itoa(os.Getuid()), "--node-provisioner", "join")

	dataDir := filepath.Join(t.TempDir(), "node")
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, []byte(ca.token("spiffe://example.org/node/n1")+"\n"))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	p := startProc(t, "agentca agent", filepath.Join(t.TempDir(), "agent.log"), "agent", "--ca", ca.URL, "--root", ca.rootsFile(),
		"--token-file", tokFile, "--data-dir", dataDir, "--socket", sock, "--poll-interval", "200ms", "--ttl", "6s")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agentca agent log:\n%s", p.log())
		}
	})
	eventually(t, 20*time.Second, 50*time.Millisecond, "the agent's socket", func() bool {
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode().Type() == os.ModeSocket && !p.exited()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// FetchJWTSVID: go-spiffe checks it against /v1/bundle.
	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: jwtAudience})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	tok := svid.Marshal()
	jb, keys := jwtBundle(t, ca)
	got, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience})
	if err != nil || got.ID.String() != me {
		t.Fatalf("go-spiffe with /v1/bundle: %v %v", got, err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{"https://other.example.org"}); err == nil {
		t.Error("go-spiffe accepted the JWT-SVID for another audience")
	}
	// go-oidc: discovery, then jwks_uri.
	octx := oidc.ClientContext(ctx, ca.client(nil))
	provider, err := oidc.NewProvider(octx, ca.URL)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	if idt, err := provider.Verifier(&oidc.Config{ClientID: jwtAudience}).Verify(octx, tok); err != nil || idt.Subject != me {
		t.Errorf("go-oidc refuses the agent's JWT-SVID: %v", err)
	}
	// The CA's policy judges the workload's ID and audience.
	if _, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "https://payments.example.org"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an audience the policy denies: want PermissionDenied, got %v", err)
	}
	if log := ca.proc.log(); !strings.Contains(log, "spiffe_id="+me) || !strings.Contains(log, "rule=no-payments") {
		t.Error("no jwt-svid audit line for the workload's ID and the refusing rule")
	}

	// ValidateJWTSVID through the agent.
	if v, err := client.ValidateJWTSVID(ctx, tok, jwtAudience); err != nil || v.ID.String() != me {
		t.Errorf("ValidateJWTSVID: %v %v", v, err)
	}
	if _, err := client.ValidateJWTSVID(ctx, tok, "https://other.example.org"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID for another audience: want InvalidArgument, got %v", err)
	}
	forged := tok[:len(tok)-4] + "AAAA"
	if _, err := client.ValidateJWTSVID(ctx, forged, jwtAudience); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID of a bad signature: want InvalidArgument, got %v", err)
	}

	// FetchJWTBundles: the keys of /v1/bundle.
	td := spiffeid.RequireTrustDomainFromString("example.org")
	kids := func(b *jwtbundle.Bundle) []string {
		var out []string
		for kid := range b.JWTAuthorities() {
			out = append(out, kid)
		}
		slices.Sort(out)
		return out
	}
	set, err := client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agentBundle, err := set.GetJWTBundleForTrustDomain(td)
	if err != nil || len(keys) != 1 || !slices.Equal(kids(agentBundle), []string{keys[0]["kid"].(string)}) {
		t.Fatalf("FetchJWTBundles: %v %v, /v1/bundle's keys %v", agentBundle, err, keys)
	}

	// An anchor staged on the CA reaches the open JWT bundle stream.
	updates := make(chan []string, 16)
	go func() {
		_ = client.WatchJWTBundles(ctx, jwtWatcher(func(s *jwtbundle.Set) {
			if b, err := s.GetJWTBundleForTrustDomain(td); err == nil {
				updates <- kids(b)
			}
		}))
	}()
	if k := <-updates; len(k) != 1 {
		t.Fatalf("first JWT bundle update: %v", k)
	}
	mustRun(t, "anchors", "stage", "--dir", ca.Dir)
	var both []string
	select {
	case both = <-updates:
	case <-time.After(15 * time.Second):
		t.Fatal("the staged anchor's JWT key did not reach the stream")
	}
	if len(both) != 2 {
		t.Fatalf("after stage: want 2 keys on the stream, got %v", both)
	}
	// The node learns the new root at its renewal (6 s certificate), then
	// the new anchor is activated and the old one retired by force.
	eventually(t, 20*time.Second, 100*time.Millisecond, "the new root to reach the agent", func() bool {
		b, err := client.FetchX509Bundles(ctx)
		if err != nil {
			return false
		}
		xb, err := b.GetX509BundleForTrustDomain(td)
		return err == nil && len(xb.X509Authorities()) == 2
	})
	if r := do(t, ca.client(nil), http.MethodGet, ca.URL+"/v1/roots", "", nil); r.status == http.StatusOK {
		ca.Roots = parseCerts(t, r.body) // the test's clients trust the new root too
	}
	oldID, newID := anchorIDs(t, ca)
	mustRun(t, "anchors", "activate", "--dir", ca.Dir, "--force", newID)
	// Retire by force (not to wait for jwt_svid.max_ttl) once the node's
	// certificate (6 s) comes from the new anchor; the workload's SVID
	// (5 min) and its JWT-SVID, signed by the old key, are still unexpired.
	oldIssuer := svidIssuer(t, ctx, client)
	eventually(t, 20*time.Second, 200*time.Millisecond, "the node certificate of the new anchor", func() bool {
		node, err := tls.LoadX509KeyPair(filepath.Join(dataDir, "cert.pem"), filepath.Join(dataDir, "key.pem"))
		return err == nil && len(node.Certificate) > 1 && string(node.Certificate[1]) != oldIssuer
	})
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience}); err != nil {
		t.Fatalf("before retirement the old key's JWT-SVID is valid: %v", err)
	}
	mustRun(t, "anchors", "retire", "--dir", ca.Dir, "--force", oldID)
	select {
	case k := <-updates:
		if len(k) != 1 || k[0] == keys[0]["kid"] {
			t.Fatalf("after retirement the stream should hold only the new key, got %v", k)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the retirement did not reach the JWT bundle stream")
	}
	jb, _ = jwtBundle(t, ca)
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience}); err == nil {
		t.Error("go-spiffe accepts a JWT-SVID signed by the retired key")
	}
	if _, err := client.ValidateJWTSVID(ctx, tok, jwtAudience); status.Code(err) != codes.InvalidArgument {
		t.Errorf("the agent's ValidateJWTSVID of a token signed by the retired key: want InvalidArgument, got %v", err)
	}
	// A new audience (not cached): the CA refuses the workload's SVID of
	// the retired anchor, the agent gets it a new one and asks again; the
	// JWT-SVID is signed by the new key and valid.
	svid2, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "https://new.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid2.Marshal(), jb, []string{"https://new.example.org"}); err != nil {
		t.Errorf("the new key's JWT-SVID: %v", err)
	}
	if _, err := client.ValidateJWTSVID(ctx, svid2.Marshal(), "https://new.example.org"); err != nil {
		t.Errorf("the agent's ValidateJWTSVID of the new key's JWT-SVID: %v", err)
	}
}

// svidIssuer is the DER of the issuing CA of the caller's X.509-SVID.
func svidIssuer(t *testing.T, ctx context.Context, c *workloadapi.Client) string {
	t.Helper()
	svid, err := c.FetchX509SVID(ctx)
	if err != nil || len(svid.Certificates) < 2 {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	return string(svid.Certificates[1].Raw)
}

// anchorIDs returns the active and the staged anchor's IDs.
func anchorIDs(t *testing.T, ca *testCA) (active, staged string) {
	t.Helper()
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", ca.Dir).stdout), &list); err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		switch a["state"] {
		case "active":
			active = a["id"].(string)
		case "staged":
			staged = a["id"].(string)
		}
	}
	if active == "" || staged == "" {
		t.Fatalf("anchors list: %v", list)
	}
	return active, staged
}

// jwtWatcher is a workloadapi.JWTBundleWatcher calling f on each update.
type jwtWatcher func(*jwtbundle.Set)

func (f jwtWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) { f(s) }
func (jwtWatcher) OnJWTBundlesWatchError(error)          {}
