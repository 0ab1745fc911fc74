package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"github.com/agentca/agentca/internal/testclock"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// testTD is the trust domain of every test authority.
const testTD = "example.org"

// testEpoch is when the test hierarchies are created; test clocks run from
// here so that results do not depend on the wall clock.
var testEpoch = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)

// testClock is a settable clock for Options.Now.
type testClock = testclock.Clock

var newTestClock = testclock.New

var (
	hierarchyMu    sync.Mutex
	hierarchyCache = map[ca.KeyType]*ca.Hierarchy{}
)

// testHierarchy returns a hierarchy of key type kt created at testEpoch,
// shared by the tests of one run (RSA key generation is slow).
func testHierarchy(t testing.TB, kt ca.KeyType) *ca.Hierarchy {
	t.Helper()
	hierarchyMu.Lock()
	defer hierarchyMu.Unlock()
	if h, ok := hierarchyCache[kt]; ok {
		return h
	}
	h, err := ca.NewHierarchy("agentca-test", kt, testEpoch)
	if err != nil {
		t.Fatalf("NewHierarchy(%s): %v", kt, err)
	}
	hierarchyCache[kt] = h
	return h
}

func testIssuer(t testing.TB, h *ca.Hierarchy) *ca.Issuer {
	t.Helper()
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return iss
}

// openTestStore opens a bolt store in a fresh temporary directory and
// closes it when the test ends. It returns the store and its file path.
func openTestStore(t testing.TB) (*bolt.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agentca.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

// testAuthority returns an Authority over the EC P-256 test hierarchy, a
// fresh bolt store and a clock one hour after testEpoch. edit may change
// the options before New.
func testAuthority(t testing.TB, edit func(*ca.Options)) (*ca.Authority, *bolt.Store, *testClock) {
	t.Helper()
	st, _ := openTestStore(t)
	clk := newTestClock(testEpoch.Add(time.Hour))
	opts := ca.Options{
		TrustDomain: testTD,
		Issuer:      testIssuer(t, testHierarchy(t, ca.ECP256)),
		Recorder:    st,
		Now:         clk.Now,
	}
	if edit != nil {
		edit(&opts)
	}
	a, err := ca.New(opts)
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return a, st, clk
}

func mustKey(t testing.TB, kt ca.KeyType) crypto.Signer {
	t.Helper()
	k, err := ca.GenerateKey(kt)
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", kt, err)
	}
	return k
}

// loadTestKey reads a PKCS#8 key from testdata (the RSA keys that are too
// small to accept or too slow to generate on every run).
func loadTestKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("testdata/%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
	return k.(crypto.Signer)
}

// csrDER makes a DER certificate request for key.
func csrDER(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func csrPEM(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER(t, key, tmpl)})
}

// issue issues a leaf for a new P-256 key and fails the test on error.
func issue(t testing.TB, a *ca.Authority, req *ca.Request) (*ca.Issued, *x509.Certificate) {
	t.Helper()
	if req.PublicKey == nil {
		req.PublicKey = mustKey(t, ca.ECP256).Public()
	}
	if req.Provisioner == "" {
		req.Provisioner = "join"
	}
	got, err := a.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("Issue(%s): %v", req.SPIFFEID, err)
	}
	leaf, err := x509.ParseCertificate(got.DER)
	if err != nil {
		t.Fatalf("the issued DER does not parse: %v", err)
	}
	return got, leaf
}

// countCerts returns how many certificates st holds.
func countCerts(t testing.TB, st store.Store) int {
	t.Helper()
	recs, err := st.ListCertificates(context.Background(), store.ListOptions{Limit: 10000})
	if err != nil {
		t.Fatalf("ListCertificates: %v", err)
	}
	return len(recs)
}

// emptySubject is the DER of an empty Name (an empty RDNSequence).
var emptySubject = []byte{0x30, 0x00}
