package agent_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// TestClientJWTSVID: the client helpers the node agent will use: a
// JWT-SVID for the certificate's ID, checked against JWTBundle; the
// lifetime asked for; the CA's refusals as *APIError.
func TestClientJWTSVID(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: func(c *config.Config) { c.JWTSVID.MaxTTL = config.Duration(10 * time.Minute) }})
	client, err := agent.NewClient(ca.URL, ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	const id = "spiffe://example.org/agent/jwt"
	cr := enrollCreds(t, ca, client, id)
	ctx := context.Background()
	svid, err := client.JWTSVID(ctx, cr.TLSCertificate(), []string{"https://svc.example.org", "spiffe://example.org/svc"}, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if svid.SPIFFEID != id || time.Until(svid.ExpiresAt) > 90*time.Second || time.Until(svid.ExpiresAt) < 80*time.Second {
		t.Errorf("JWT-SVID %+v: want %s expiring in 90s", svid, id)
	}
	b, err := client.JWTBundle(ctx, spiffeid.RequireTrustDomainFromString("example.org"))
	if err != nil || len(b.JWTAuthorities()) != 1 {
		t.Fatalf("JWTBundle: %v", err)
	}
	got, err := jwtsvid.ParseAndValidate(svid.Token, b, []string{"spiffe://example.org/svc"})
	if err != nil || got.ID.String() != id {
		t.Fatalf("ParseAndValidate: %v %v", got, err)
	}
	_, err = client.JWTSVID(ctx, cr.TLSCertificate(), []string{"x"}, time.Hour)
	var ae *agent.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != "bad_ttl" {
		t.Errorf("a ttl over jwt_svid.max_ttl: %v", err)
	}
	if _, err := client.JWTSVID(ctx, cr.TLSCertificate(), nil, 0); err == nil {
		t.Error("no audience accepted")
	}
}
