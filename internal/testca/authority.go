package testca

import (
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
)

// Authority is an issuing CA for trust domain example.org in tests that
// drive ca.Authority directly: a new hierarchy named name, made at
// now() (nil: time.Now, also the authority's clock), recording through
// rec.
func Authority(t testing.TB, name string, rec ca.Recorder, now func() time.Time) (*ca.Authority, *ca.Hierarchy) {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	h, err := ca.NewHierarchy(name, ca.ECP256, now())
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.New(ca.Options{TrustDomain: "example.org", Issuer: iss, Recorder: rec, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return a, h
}
