package ca_test

import (
	"crypto/x509"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
)

// TestIssuingCAStatusURLs: an issuing CA (and a cross-signed one) names
// the OCSP responder and its root's CRL under the public HTTP URL; none
// without one.
func TestIssuingCAStatusURLs(t *testing.T) {
	now := time.Now()
	old, err := ca.NewHierarchyWithKeys("agentca", mustKey(t, ca.ECP256), mustKey(t, ca.ECP256), now, "http://ca.example:8080/")
	if err != nil {
		t.Fatal(err)
	}
	want := func(what string, c, root *x509.Certificate) {
		t.Helper()
		crl := "http://ca.example:8080/crl/" + hex.EncodeToString(root.SubjectKeyId)
		if !slices.Equal(c.OCSPServer, []string{"http://ca.example:8080/ocsp"}) || !slices.Equal(c.CRLDistributionPoints, []string{crl}) {
			t.Errorf("%s: OCSP %v, CRL %v; want the responder and %s", what, c.OCSPServer, c.CRLDistributionPoints, crl)
		}
	}
	want("init's issuing CA", old.Issuing, old.Root)
	rootKey, issKey := mustKey(t, ca.ECP256), mustKey(t, ca.ECP256)
	root, err := ca.NewRoot("agentca", "2", rootKey, now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuingCA("agentca", "2", issKey, root, rootKey, now, "http://ca.example:8080")
	if err != nil {
		t.Fatal(err)
	}
	want("a new issuing CA", iss, root)
	cross, err := ca.CrossSign(iss, old.Root, old.RootKey, now, "http://ca.example:8080")
	if err != nil {
		t.Fatal(err)
	}
	want("the cross-signed certificate", cross, old.Root)
	bare, err := ca.NewHierarchy("agentca", ca.ECP256, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(bare.Issuing.OCSPServer)+len(bare.Issuing.CRLDistributionPoints) != 0 {
		t.Errorf("without a URL: OCSP %v, CRL %v; want none", bare.Issuing.OCSPServer, bare.Issuing.CRLDistributionPoints)
	}
}

// TestNewRootResponder: the root's delegated responder has the responder
// profile, is signed by the root, and refuses a key that is not the root's.
func TestNewRootResponder(t *testing.T) {
	now := time.Now()
	h, err := ca.NewHierarchy("agentca", ca.Ed25519, now)
	if err != nil {
		t.Fatal(err)
	}
	pub := mustKey(t, ca.ECP256).Public()
	c, err := ca.NewRootResponder(h.Root, h.RootKey, pub, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(h.Root); err != nil {
		t.Fatal(err)
	}
	if c.IsCA || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}) || c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("profile: CA %v, EKU %v, KU %v", c.IsCA, c.ExtKeyUsage, c.KeyUsage)
	}
	if d := c.NotAfter.Sub(now); d > time.Hour || d < time.Hour-2*time.Second {
		t.Errorf("lifetime %s, want 1h", d)
	}
	if _, err := ca.NewRootResponder(h.Root, h.IssuingKey, pub, now, time.Hour); err == nil {
		t.Error("a key that is not the root's: want an error")
	}
}
