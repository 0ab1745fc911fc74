package agent_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/ca"
)

// TestClientRequiresCAServerID: a workload certificate of the same CA,
// valid for the CA's address (as a dns_sans template could make it), does
// not pass for the CA: the client wants the CA's own SPIFFE ID.
func TestClientRequiresCAServerID(t *testing.T) {
	c := startClientTestCA(t)
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/workload/impostor",
		IPAddresses: []string{"127.0.0.1"}, DNSNames: []string{"localhost"}, Provisioner: "join", TTL: time.Hour, MaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	impostor := &tls.Certificate{Certificate: [][]byte{got.DER, c.h.Issuing.Raw}, PrivateKey: key}
	// The genuine server answers first.
	if _, err := c.client(t).Roots(context.Background()); err != nil {
		t.Fatalf("the CA's own certificate: %v", err)
	}
	c.ts.TLS.Certificates = []tls.Certificate{*impostor}
	c.ts.CloseClientConnections()
	_, err = c.client(t).Roots(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not the CA's") {
		t.Fatalf("a workload certificate passed for the CA: %v", err)
	}
	if _, err := agent.Bootstrap(context.Background(), c.ts.URL, rootFingerprint(c.h.Root)); err == nil || !strings.Contains(err.Error(), "not the CA's") {
		t.Fatalf("Bootstrap accepted a workload certificate: %v", err)
	}
}
