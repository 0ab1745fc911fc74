package jwtverifytest

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// TrustDomain is the trust domain Issue renders templates for.
const TrustDomain = "example.org"

// Issue does what the CA does with an Identity: renders tmpl (with
// "trust_domain" example.org), issues a certificate with a real Authority
// and bbolt store, recording id.Once. It returns the SPIFFE ID. When
// id.Once is not empty it issues again for another key and requires
// store.ErrReplay.
func Issue(t testing.TB, tmpl string, id *provisioners.Identity) string {
	t.Helper()
	tpl, err := provisioners.NewTemplate(tmpl, nil)
	if err != nil {
		t.Fatal(err)
	}
	spiffeID, _, err := tpl.Render(TrustDomain, id.Claims)
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h, err := ca.NewHierarchy("jwt-test", ca.ECP256, Start)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		t.Fatal(err)
	}
	clk := NewClock()
	authority, err := ca.New(ca.Options{TrustDomain: TrustDomain, Issuer: iss, Recorder: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := &ca.Request{PublicKey: key.Public(), SPIFFEID: spiffeID, Provisioner: "jwt", Once: id.Once}
	if _, err := authority.Issue(ctx, req); err != nil {
		t.Fatalf("issue %s: %v", spiffeID, err)
	}
	if len(id.Once) > 0 {
		// A replay with another key is refused (a retry with the same
		// key gets the certificate already issued).
		other, err := ca.GenerateKey(ca.ECP256)
		if err != nil {
			t.Fatal(err)
		}
		again := *req
		again.PublicKey = other.Public()
		if _, err := authority.Issue(ctx, &again); !errors.Is(err, store.ErrReplay) {
			t.Fatalf("second issuance with Once %q: err = %v, want store.ErrReplay", id.Once, err)
		}
	}
	return spiffeID
}
