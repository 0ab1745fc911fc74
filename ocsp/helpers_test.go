package ocsp_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"github.com/agentca/agentca/internal/testclock"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	xocsp "golang.org/x/crypto/ocsp"
)

const testTD = "example.org"

// oidOCSPNoCheck is id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// testClock is a settable clock for Options.Now.
type testClock = testclock.Clock

var newTestClock = testclock.New

var (
	hierarchyMu    sync.Mutex
	hierarchyCache = map[string]*ca.Hierarchy{}
)

// testHierarchy returns a hierarchy named name with keys of type kt,
// shared by the tests of one run (RSA key generation is slow).
func testHierarchy(t testing.TB, name string, kt ca.KeyType) *ca.Hierarchy {
	t.Helper()
	hierarchyMu.Lock()
	defer hierarchyMu.Unlock()
	k := name + "/" + string(kt)
	if h, ok := hierarchyCache[k]; ok {
		return h
	}
	h, err := ca.NewHierarchy(name, kt, time.Now())
	if err != nil {
		t.Fatalf("NewHierarchy(%s, %s): %v", name, kt, err)
	}
	hierarchyCache[k] = h
	return h
}

// countingStore is the real bolt store, counting the Certificate reads the
// responder makes (one per signature). When pause is set, it is called
// after each real read, before the record goes back to the responder.
type countingStore struct {
	*bolt.Store
	reads atomic.Int64
	pause atomic.Pointer[func()]
	// down makes every read fail as an etcd cluster without quorum does.
	down atomic.Bool
}

func (c *countingStore) Certificate(ctx context.Context, serial string) (*store.Certificate, error) {
	if c.down.Load() {
		return nil, store.ErrUnavailable
	}
	rec, err := c.Store.Certificate(ctx, serial)
	c.reads.Add(1)
	if p := c.pause.Load(); p != nil {
		(*p)()
	}
	return rec, err
}

// envOptions vary a test environment.
type envOptions struct {
	keyType  ca.KeyType    // of the CA hierarchy; "" means P-256
	name     string        // of the hierarchy; "" means "agentca-ocsp-test"
	validity time.Duration // the responder's; 0 means its default
	bolt     *bolt.Store   // share a store with another env; nil opens one
	fresh    func() bool   // Options.Fresh
}

// env is an issuing CA recording into a real bolt store, and a responder
// with a delegated responder certificate that the CA issued.
type env struct {
	t         testing.TB
	clock     *testClock
	h         *ca.Hierarchy
	issuer    *ca.Issuer
	bolt      *bolt.Store
	store     *countingStore
	authority *ca.Authority
	responder *ocsp.Responder
	signer    *ocsp.Signer
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.keyType == "" {
		o.keyType = ca.ECP256
	}
	if o.name == "" {
		o.name = "agentca-ocsp-test"
	}
	e := &env{t: t, clock: newTestClock(time.Now().Truncate(time.Second)), h: testHierarchy(t, o.name, o.keyType)}
	var err error
	e.issuer, err = ca.NewIssuer(e.h.Issuing, e.h.IssuingKey, e.h.Root)
	if err != nil {
		t.Fatal(err)
	}
	e.bolt = o.bolt
	if e.bolt == nil {
		e.bolt, err = bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.bolt.Close() })
	}
	e.store = &countingStore{Store: e.bolt}
	e.authority, err = ca.New(ca.Options{TrustDomain: testTD, Issuer: e.issuer, Recorder: e.bolt, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.responder, err = ocsp.New(ocsp.Options{Store: e.store, Validity: o.validity, Now: e.clock.Now, Fresh: o.fresh})
	if err != nil {
		t.Fatal(err)
	}
	e.signer = e.newSigner()
	if err := e.responder.SetSigner(e.signer); err != nil {
		t.Fatal(err)
	}
	return e
}

// newSigner issues a delegated responder certificate for a new P-256 key.
func (e *env) newSigner() *ocsp.Signer {
	e.t.Helper()
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		e.t.Fatal(err)
	}
	issued, err := e.authority.IssueResponder(context.Background(), key.Public(), 24*time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		e.t.Fatal(err)
	}
	return &ocsp.Signer{Issuer: e.issuer.Cert, Cert: cert, Key: key}
}

// issue issues and records a leaf living ttl (0: the default).
func (e *env) issue(ttl time.Duration) *x509.Certificate {
	e.t.Helper()
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		e.t.Fatal(err)
	}
	issued, err := e.authority.Issue(context.Background(), &ca.Request{
		PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/ocsp-test/" + randHex(e.t, 4),
		Provisioner: "test", TTL: ttl, MaxTTL: 24 * time.Hour,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		e.t.Fatal(err)
	}
	return cert
}

// request is a DER OCSP request about cert, with CertID hash h (0: SHA-1).
func (e *env) request(cert *x509.Certificate, h crypto.Hash) []byte {
	e.t.Helper()
	der, err := xocsp.CreateRequest(cert, e.issuer.Cert, &xocsp.RequestOptions{Hash: h})
	if err != nil {
		e.t.Fatal(err)
	}
	return der
}

// respond asks the responder and checks the invariants of a signed answer:
// the body is the response's DER, it parses for cert and verifies against
// the issuer through the embedded responder certificate.
func (e *env) respond(der []byte, cert *x509.Certificate) (*ocsp.Response, *xocsp.Response) {
	e.t.Helper()
	resp, body, err := e.responder.Respond(context.Background(), der)
	if err != nil || resp == nil {
		e.t.Fatalf("Respond: %v (body %x)", err, body)
	}
	if string(body) != string(resp.DER) {
		e.t.Fatalf("Respond body is not the response's DER")
	}
	parsed, err := xocsp.ParseResponseForCert(body, cert, e.issuer.Cert)
	if err != nil {
		e.t.Fatalf("ParseResponseForCert: %v", err)
	}
	return resp, parsed
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// waitGoroutines polls the goroutine dump until at least n goroutines
// satisfy match (given the goroutine's header line and its stack) or done
// (when not nil) is closed, and fails after a deadline. It is how a test
// knows that goroutines are parked where it wants them, without sleeping.
func waitGoroutines(t testing.TB, n int, done <-chan struct{}, match func(header, stack string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		select {
		case <-done:
			return
		default:
		}
		k := runtime.Stack(buf, true)
		got := 0
		for _, g := range strings.Split(string(buf[:k]), "\n\n") {
			header, stack, _ := strings.Cut(g, "\n")
			if match(header, stack) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d goroutines reached the expected point", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// parkedInFlight matches a goroutine waiting in the responder's
// per-serial signing group for another goroutine's signature.
func parkedInFlight(header, stack string) bool {
	return strings.Contains(header, "[select") && strings.Contains(stack, "ocsp.(*Responder).sign(")
}

// requestCertID returns the DER of the first CertID in an OCSP request.
func requestCertID(t testing.TB, req []byte) []byte {
	t.Helper()
	next := func(b []byte) asn1.RawValue {
		var v asn1.RawValue
		if _, err := asn1.Unmarshal(b, &v); err != nil {
			t.Fatalf("request: %v", err)
		}
		return v
	}
	ocspRequest := next(req)
	tbs := next(ocspRequest.Bytes)
	rest := tbs.Bytes
	for {
		v := next(rest)
		if v.Class == asn1.ClassUniversal { // requestList, after the optional [0] and [1]
			return next(next(v.Bytes).Bytes).FullBytes
		}
		rest = rest[len(v.FullBytes):]
	}
}
