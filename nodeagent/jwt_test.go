package nodeagent_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/nodeagent"
	"github.com/agentca/agentca/workloads"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// servedAgent is a node agent with a real node certificate from a real
// in-process CA, serving on a unix socket, and a go-spiffe client of it.
type servedAgent struct {
	ca     *testca.CA
	na     *nodeagent.Agent
	client *workloadapi.Client
	sock   string
}

// serveAgent starts one; defs are created on the CA first.
func serveAgent(tb testing.TB, defs ...workloads.Definition) *servedAgent {
	tb.Helper()
	ca := testca.Start(tb, testca.Options{})
	for _, def := range defs {
		if st, body := ca.Admin(tb, http.MethodPost, "/admin/v1/workloads", def, nil); st != http.StatusCreated {
			tb.Fatalf("create: %d %s", st, body)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	tok := ca.Token(tb, "spiffe://example.org/node/jwt")
	src, err := agent.NewSource(ctx, agent.Config{CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { src.Close() })
	nc, err := agent.NewNodeClient(ca.URL, src.Pool, src.GetClientCertificate)
	if err != nil {
		tb.Fatal(err)
	}
	na, err := nodeagent.New(nodeagent.Config{CA: nc, JWT: nc, Roots: src.Roots, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err != nil {
		tb.Fatal(err)
	}
	if err := na.Refresh(ctx); err != nil {
		tb.Fatal(err)
	}
	go na.Run(ctx)
	sock := filepath.Join(tb.TempDir(), "agent.sock")
	l, err := nodeagent.Listen(sock)
	if err != nil {
		tb.Fatal(err)
	}
	srv := na.NewServer()
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(srv.Stop)
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	return &servedAgent{ca: ca, na: na, client: client, sock: sock}
}

func myUID() string { return "unix:uid:" + strconv.Itoa(os.Getuid()) }

// TestJWTMethods: go-spiffe's client gets a JWT-SVID through the agent
// (cached: the same token again), the JWT bundle validates it, and
// ValidateJWTSVID accepts it for its audience only; a caller the
// definitions give nothing is refused.
func TestJWTMethods(t *testing.T) {
	s := serveAgent(t, workloads.Definition{ID: "me", SPIFFEID: "spiffe://example.org/me", Selectors: []string{myUID()},
		NodeProvisioners: []string{"join"}})
	ctx := context.Background()
	aud := "https://svc.example.org"
	svid, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://example.org/me" {
		t.Errorf("sub %s", svid.ID)
	}
	again, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
	if err != nil || again.Marshal() != svid.Marshal() {
		t.Errorf("a second fetch within half the lifetime: want the cached token (%v)", err)
	}
	other, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud, ExtraAudiences: []string{"https://b.example.org"}})
	if err != nil || other.Marshal() == svid.Marshal() || len(other.Audience) != 2 {
		t.Errorf("other audiences: want another token with both (%v)", err)
	}
	bundles, err := s.client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{aud}); err != nil {
		t.Errorf("the JWT bundle does not validate the JWT-SVID: %v", err)
	}
	got, err := s.client.ValidateJWTSVID(ctx, svid.Marshal(), aud)
	if err != nil || got.ID.String() != "spiffe://example.org/me" {
		t.Errorf("ValidateJWTSVID: %v %v", got, err)
	}
	if _, err := s.client.ValidateJWTSVID(ctx, svid.Marshal(), "https://other.example.org"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID for another audience: want InvalidArgument, got %v", err)
	}
	if _, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud, Subject: spiffeid.RequireFromString("spiffe://example.org/other")}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID for an ID the caller does not have: want PermissionDenied, got %v", err)
	}
}

// TestJWTMethodsNoIdentity: a caller with no identity gets
// PermissionDenied from the three JWT methods.
func TestJWTMethodsNoIdentity(t *testing.T) {
	s := serveAgent(t, workloads.Definition{ID: "other", SPIFFEID: "spiffe://example.org/other", Selectors: []string{"unix:uid:999999"},
		NodeProvisioners: []string{"join"}})
	ctx := context.Background()
	if _, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID: %v", err)
	}
	if _, err := s.client.FetchJWTBundles(ctx); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTBundles: %v", err)
	}
	if _, err := s.client.ValidateJWTSVID(ctx, "a.b.c", "x"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ValidateJWTSVID: %v", err)
	}
}

// TestValidateJWTSVIDCacheKey: a remembered validation is found only for
// the same token and audience, however the two are split.
func TestValidateJWTSVIDCacheKey(t *testing.T) {
	s := serveAgent(t, workloads.Definition{ID: "me", SPIFFEID: "spiffe://example.org/me", Selectors: []string{myUID()},
		NodeProvisioners: []string{"join"}})
	ctx := context.Background()
	aud := "https://svc.example.org"
	svid, err := s.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	tok := svid.Marshal()
	if _, err := s.client.ValidateJWTSVID(ctx, tok, aud); err != nil {
		t.Fatal(err)
	}
	// The same bytes split differently between audience and token.
	for _, c := range []struct{ tok, aud string }{
		{aud[len(aud)-3:] + tok, aud[:len(aud)-3]},
		{tok[5:], aud + tok[:5]},
	} {
		if _, err := s.client.ValidateJWTSVID(ctx, c.tok, c.aud); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ValidateJWTSVID(%.20q…, %q): want InvalidArgument, got %v", c.tok, c.aud, err)
		}
	}
}
