package ca_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
)

func TestNewAnchorCertificates(t *testing.T) {
	now := time.Now()
	old, err := ca.NewHierarchy("agentca", ca.ECP256, now)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, issKey := mustKey(t, ca.ECP256), mustKey(t, ca.ECP256)
	root, err := ca.NewRoot("agentca", "2", rootKey, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuingCA("agentca", "2", issKey, root, rootKey, now, "")
	if err != nil {
		t.Fatal(err)
	}
	if root.Subject.CommonName != "agentca Root CA 2" || iss.Subject.CommonName != "agentca Issuing CA 2" || !iss.IsCA || iss.MaxPathLen != 0 {
		t.Fatalf("names/constraints: %q %q", root.Subject.CommonName, iss.Subject.CommonName)
	}
	cross, err := ca.CrossSign(iss, old.Root, old.RootKey, now, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CrossSign(iss, old.Root, rootKey, now, ""); err == nil {
		t.Fatal("CrossSign with a key that is not the root's: want an error")
	}
	issuer, err := ca.NewIssuer(iss, issKey, root)
	if err != nil {
		t.Fatal(err)
	}
	withCross, err := issuer.WithCross(cross)
	if err != nil {
		t.Fatal(err)
	}
	if len(withCross.ChainDER()) != 2 || len(withCross.ChainPEM()) != 2 || len(issuer.ChainDER()) != 1 {
		t.Fatalf("chain lengths: %d %d %d", len(withCross.ChainDER()), len(withCross.ChainPEM()), len(issuer.ChainDER()))
	}
	if _, err := issuer.WithCross(old.Issuing); err == nil {
		t.Fatal("WithCross with another CA's certificate: want an error")
	}
	// A leaf-like certificate signed by the new issuing CA chains to the
	// old root through the cross-signed certificate, and to the new root
	// directly.
	for name, r := range map[string]*x509.Certificate{"old root": old.Root, "new root": root} {
		roots := x509.NewCertPool()
		roots.AddCert(r)
		inter := x509.NewCertPool()
		inter.AddCert(iss)
		inter.AddCert(cross)
		if _, err := iss.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); name == "new root" && err != nil {
			t.Fatalf("issuing CA does not chain to the %s: %v", name, err)
		}
		if _, err := cross.Verify(x509.VerifyOptions{Roots: roots}); name == "old root" && err != nil {
			t.Fatalf("cross-signed certificate does not chain to the %s: %v", name, err)
		}
	}
	if id := ca.AnchorID(iss); len(id) != 16 {
		t.Fatalf("AnchorID = %q", id)
	}
}

func TestAnchorTransitions(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	set := func() *store.AnchorSet {
		return &store.AnchorSet{Sequence: 3, Anchors: []store.Anchor{
			{ID: "old", State: store.AnchorActive, StagedAt: now.Add(-time.Hour), ActivatedAt: now.Add(-time.Hour)},
			{ID: "new", State: store.AnchorStaged, StagedAt: now.Add(-10 * time.Minute)},
		}}
	}
	s := set()
	if err := ca.ActivateAnchor(s, "new", now, time.Hour, false); !errors.Is(err, ca.ErrAnchorUnsafe) {
		t.Fatalf("activate 10 min after staging with a 1 h leaf lifetime: %v", err)
	}
	if s.Find("new").State != store.AnchorStaged || s.Find("old").State != store.AnchorActive {
		t.Fatal("a refused activation changed states")
	}
	if err := ca.ActivateAnchor(s, "new", now, time.Hour, true); err != nil {
		t.Fatalf("forced activation: %v", err)
	}
	if s.Find("new").State != store.AnchorActive || s.Find("old").State != store.AnchorRetiring || !s.Find("old").RetiringAt.Equal(now) {
		t.Fatalf("after activation: %+v", s.Anchors)
	}
	s = set()
	if err := ca.ActivateAnchor(s, "new", now, 5*time.Minute, false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		want error
	}{{"nope", ca.ErrAnchorNotFound}, {"old", ca.ErrAnchorState}, {"new", ca.ErrAnchorState}} {
		if err := ca.ActivateAnchor(s, tc.id, now, 0, true); !errors.Is(err, tc.want) {
			t.Errorf("activate %s: %v, want %v", tc.id, err, tc.want)
		}
	}
	if err := ca.RetireAnchor(s, "new", now, 0, time.Time{}, true); !errors.Is(err, ca.ErrAnchorState) {
		t.Fatalf("retire the active anchor: %v", err)
	}
	if err := ca.RetireAnchor(s, "old", now, 3, now.Add(time.Minute), false); !errors.Is(err, ca.ErrAnchorUnsafe) {
		t.Fatalf("retire with valid certificates: %v", err)
	}
	if err := ca.RetireAnchor(s, "old", now, 0, time.Time{}, false); err != nil {
		t.Fatal(err)
	}
	if a := s.Find("old"); a.State != store.AnchorRetired || !a.RetiredAt.Equal(now) {
		t.Fatalf("retired: %+v", a)
	}
	if err := ca.RetireAnchor(s, "old", now, 0, time.Time{}, false); !errors.Is(err, ca.ErrAnchorState) {
		t.Fatalf("retire twice: %v", err)
	}
	s = set()
	if err := ca.RetireAnchor(s, "new", now, 0, time.Time{}, false); err != nil {
		t.Fatalf("retire a staged anchor: %v", err)
	}
}
