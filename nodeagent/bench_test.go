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
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// BenchmarkFetchX509SVID: FetchX509SVID answered from the agent's cache
// (each call a new stream: attestation from the kernel and /proc, then the
// cached SVID) by 64 concurrent go-spiffe callers, against a node agent
// holding a real certificate from a real in-process CA. Reports p50,
// p99, calls/s and the CPU per call (measureCalls).
func BenchmarkFetchX509SVID(b *testing.B) { fetchX509SVIDs(b, 64) }

// BenchmarkFetchX509SVIDLowConcurrency is BenchmarkFetchX509SVID with 1
// and 4 concurrent callers: the latency of one call when callers do not
// queue for the two cores.
func BenchmarkFetchX509SVIDLowConcurrency(b *testing.B) {
	for _, c := range []int{1, 4} {
		b.Run("c="+strconv.Itoa(c), func(b *testing.B) { fetchX509SVIDs(b, c) })
	}
}

// fetchX509SVIDs measures FetchX509SVID by callers concurrent callers.
func fetchX509SVIDs(b *testing.B, callers int) {
	ca := testca.Start(b, testca.Options{})
	def := workloads.Definition{ID: "bench", SPIFFEID: "spiffe://example.org/bench", Selectors: []string{"unix:uid:" + strconv.Itoa(os.Getuid())},
		NodeProvisioners: []string{"join"}}
	if st, body := ca.Admin(b, http.MethodPost, "/admin/v1/workloads", def, nil); st != http.StatusCreated {
		b.Fatalf("create: %d %s", st, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tok := ca.Token(b, "spiffe://example.org/node/bench")
	src, err := agent.NewSource(ctx, agent.Config{CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	nc, err := agent.NewNodeClient(ca.URL, src.Pool, src.GetClientCertificate)
	if err != nil {
		b.Fatal(err)
	}
	na, err := nodeagent.New(nodeagent.Config{CA: nc, Roots: src.Roots, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err != nil {
		b.Fatal(err)
	}
	if err := na.Refresh(ctx); err != nil {
		b.Fatal(err)
	}
	go na.Run(ctx)
	sock := filepath.Join(b.TempDir(), "agent.sock")
	l, err := nodeagent.Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := na.NewServer()
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	if _, err := client.FetchX509SVID(ctx); err != nil { // signs it once
		b.Fatal(err)
	}
	measureCalls(b, callers, func(ctx context.Context) error {
		_, err := client.FetchX509SVID(ctx)
		return err
	})
}
