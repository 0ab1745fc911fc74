package ca_test

import (
	"context"
	"errors"
	"testing"

	"github.com/agentca/agentca/ca"
)

// TestIssueReservedID: only the CA's own certificates (CAIdentity) may
// carry an ID under /agentca.
func TestIssueReservedID(t *testing.T) {
	a, _, _ := testAuthority(t, nil)
	req := &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(), SPIFFEID: "spiffe://example.org/agentca/server", Provisioner: "k8s"}
	if got, err := a.Issue(context.Background(), req); got != nil || !errors.Is(err, ca.ErrIdentity) {
		t.Fatalf("Issue(reserved) = %v, %v; want ErrIdentity", got != nil, err)
	}
	req.CAIdentity = true
	issue(t, a, req)
}
