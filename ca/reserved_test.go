package ca_test

import (
	"context"
	"crypto/rsa"
	"errors"
	"math/big"
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

// TestRSAKeyCap: RSA keys over 4096 bits are refused (before any
// signature made with them is checked: ParseCSR checks the key first).
func TestRSAKeyCap(t *testing.T) {
	n := new(big.Int).Lsh(big.NewInt(1), 4096) // 4097 bits
	n.SetBit(n, 0, 1)
	if err := ca.CheckPublicKey(&rsa.PublicKey{N: n, E: 65537}); !errors.Is(err, ca.ErrKeyType) {
		t.Fatalf("RSA-4097: %v", err)
	}
	if err := ca.CheckPublicKey(loadTestKey(t, "rsa-4096.key.pem").Public()); err != nil {
		t.Fatalf("RSA-4096: %v", err)
	}
}
