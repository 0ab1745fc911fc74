package k8ssa_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
	"github.com/agentca/agentca/provisioners/k8ssa"
)

// TestTokenReviewBounded: without the cluster's keys, tokens whose
// signature the CA cannot check reach the API server at most ReviewBurst
// times at once and ReviewRate a second; attacker text the refusal quotes
// is truncated.
func TestTokenReviewBounded(t *testing.T) {
	clk := jt.NewClock()
	forger := newCluster(t) // keys the cluster never had
	api := newFakeAPI(t)
	api.edit(func(f *fakeAPI) { f.authenticated = false })
	tokenFile := jt.WriteFile(t, "token", []byte(bearer+"\n"))
	b, _ := json.Marshal(&k8ssa.Config{Issuer: issuer, Audience: aud, APIServer: api.srv.URL, APICAFile: api.caFile, APITokenFile: tokenFile})
	p := newProv(t, mustParse(t, string(b)), k8ssa.Options{Now: clk.Now})
	ctx := context.Background()
	forged := forger.sign(t, podToken(clk.Now(), "prod", "web", "web-0"))
	limited := 0
	for range 3 * k8ssa.ReviewBurst {
		id, err := p.Attest(ctx, forged)
		refused(t, id, err, "TokenReview")
		if strings.Contains(err.Error(), "retry later") {
			limited++
		}
	}
	if n := api.reviews.Load(); n != k8ssa.ReviewBurst || limited != 2*k8ssa.ReviewBurst {
		t.Fatalf("%d TokenReview calls and %d refused unasked for %d forged tokens; want %d and %d", n, limited, 3*k8ssa.ReviewBurst, k8ssa.ReviewBurst, 2*k8ssa.ReviewBurst)
	}
	clk.Advance(time.Second)
	for range 2 * k8ssa.ReviewRate {
		_, _ = p.Attest(ctx, forged)
	}
	if n := api.reviews.Load(); n != k8ssa.ReviewBurst+k8ssa.ReviewRate {
		t.Fatalf("after a second: %d calls, want %d", n, k8ssa.ReviewBurst+k8ssa.ReviewRate)
	}

	// 5 KB of text in a claim the refusal quotes.
	long := strings.Repeat("x", 5000)
	id, err := p.Attest(ctx, forger.sign(t, set(podToken(clk.Now(), "prod", "web", "web-0"), "sub", long)))
	refused(t, id, err, "sub")
	if len(err.Error()) > 512 {
		t.Fatalf("the refusal is %d bytes: it copies the claim", len(err.Error()))
	}
}
