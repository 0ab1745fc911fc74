package crl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"github.com/agentca/agentca/internal/testclock"
	"math/big"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

const testTD = "example.org"

// oidReasonCode is the CRL entry extension id-ce-cRLReasons.
var oidReasonCode = asn1.ObjectIdentifier{2, 5, 29, 21}

// testClock is a settable clock for Options.Now.
type testClock = testclock.Clock

var newTestClock = testclock.New

var (
	hierarchyMu    sync.Mutex
	hierarchyCache = map[string]*ca.Hierarchy{}
)

func testIssuer(t testing.TB, name string) *ca.Issuer {
	t.Helper()
	hierarchyMu.Lock()
	defer hierarchyMu.Unlock()
	h, ok := hierarchyCache[name]
	if !ok {
		var err error
		if h, err = ca.NewHierarchy(name, ca.ECP256, time.Now()); err != nil {
			t.Fatal(err)
		}
		hierarchyCache[name] = h
	}
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// countingSource is the real bolt store, counting Revocations calls (one
// per build).
type countingSource struct {
	*bolt.Store
	builds atomic.Int64
}

func (c *countingSource) Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]store.Revocation, error) {
	c.builds.Add(1)
	return c.Store.Revocations(ctx, issuerSKI, now)
}

// env is two issuing CAs recording into one bolt store, and a publisher
// for the first.
type env struct {
	t          testing.TB
	clock      *testClock
	store      *bolt.Store
	source     *countingSource
	issuer     *ca.Issuer
	other      *ca.Issuer
	authority  *ca.Authority
	otherAuth  *ca.Authority
	publisher  *crl.Publisher
	pubOptions crl.Options
}

func newEnv(t testing.TB, o crl.Options) *env {
	t.Helper()
	e := &env{t: t, clock: newTestClock(time.Now().Truncate(time.Second))}
	var err error
	e.store, err = bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.source = &countingSource{Store: e.store}
	e.issuer, e.other = testIssuer(t, "agentca-crl-test"), testIssuer(t, "agentca-crl-other")
	if e.authority, err = ca.New(ca.Options{TrustDomain: testTD, Issuer: e.issuer, Recorder: e.store, Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	if e.otherAuth, err = ca.New(ca.Options{TrustDomain: testTD, Issuer: e.other, Recorder: e.store, Now: e.clock.Now}); err != nil {
		t.Fatal(err)
	}
	o.Issuer, o.Source = e.issuer, e.source
	if o.Now == nil {
		o.Now = e.clock.Now
	}
	e.pubOptions = o
	if e.publisher, err = crl.New(o); err != nil {
		t.Fatal(err)
	}
	return e
}

// issue issues a leaf from a living ttl and returns its serial (hex).
func (e *env) issue(a *ca.Authority, ttl time.Duration) string {
	e.t.Helper()
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		e.t.Fatal(err)
	}
	issued, err := a.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/crl-test",
		Provisioner: "test", TTL: ttl, MaxTTL: 24 * time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	return issued.Serial
}

func (e *env) revoke(serial string, reason int, at time.Time) {
	e.t.Helper()
	if _, err := e.store.Revoke(context.Background(), serial, reason, at); err != nil {
		e.t.Fatal(err)
	}
}

// build builds and parses the CRL, and checks the invariants of every
// CRL: its signature verifies against the issuer, its AKI is the issuer's
// SKI, its issuer is the issuer's subject, and the published CRL is the
// returned one.
func (e *env) build() (*crl.CRL, *x509.RevocationList) {
	e.t.Helper()
	c, err := e.publisher.Build(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	if e.publisher.Current() != c {
		e.t.Fatal("Current is not the CRL just built")
	}
	return c, e.parse(c)
}

func (e *env) parse(c *crl.CRL) *x509.RevocationList {
	e.t.Helper()
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(e.issuer.Cert); err != nil {
		e.t.Fatalf("CRL signature: %v", err)
	}
	if !bytes.Equal(rl.AuthorityKeyId, e.issuer.Cert.SubjectKeyId) {
		e.t.Errorf("AKI %x, want the issuer's SKI %x", rl.AuthorityKeyId, e.issuer.Cert.SubjectKeyId)
	}
	if !bytes.Equal(rl.RawIssuer, e.issuer.Cert.RawSubject) {
		e.t.Error("CRL issuer is not the issuing CA's subject")
	}
	if rl.Number == nil || rl.Number.Cmp(c.Number) != 0 {
		e.t.Errorf("CRL number %v, CRL.Number %v", rl.Number, c.Number)
	}
	if len(rl.RevokedCertificateEntries) != c.Entries {
		e.t.Errorf("%d entries, CRL.Entries %d", len(rl.RevokedCertificateEntries), c.Entries)
	}
	sum := sha256.Sum256(c.DER)
	if want := `"` + hex.EncodeToString(sum[:16]) + `"`; c.ETag != want {
		e.t.Errorf("ETag %s, want %s", c.ETag, want)
	}
	return rl
}

func serials(rl *x509.RevocationList) []string {
	var out []string
	for _, r := range rl.RevokedCertificateEntries {
		out = append(out, hex.EncodeToString(r.SerialNumber.Bytes()))
	}
	slices.Sort(out)
	return out
}

func TestNewRequiresIssuerAndSource(t *testing.T) {
	e := newEnv(t, crl.Options{})
	if _, err := crl.New(crl.Options{Source: e.store}); err == nil {
		t.Error("New without Issuer succeeded")
	}
	if _, err := crl.New(crl.Options{Issuer: e.issuer}); err == nil {
		t.Error("New without Source succeeded")
	}
	if e.publisher.Issuer() != e.issuer {
		t.Error("Issuer() is not the configured issuer")
	}
	if e.publisher.Current() != nil {
		t.Error("Current before the first Build is not nil")
	}
}

func TestBuildEmpty(t *testing.T) {
	e := newEnv(t, crl.Options{})
	e.issue(e.authority, 0) // issued, not revoked
	c, rl := e.build()
	if c.Entries != 0 || len(rl.RevokedCertificateEntries) != 0 {
		t.Fatalf("%d entries, want none", c.Entries)
	}
}

func TestBuildListsRevokedUnexpiredOfIssuer(t *testing.T) {
	e := newEnv(t, crl.Options{})
	t0 := e.clock.Now()
	keyCompromise := e.issue(e.authority, time.Hour)
	unspecified := e.issue(e.authority, time.Hour)
	e.issue(e.authority, time.Hour)                 // not revoked
	expiring := e.issue(e.authority, 2*time.Minute) // revoked, expires before the build
	boundary := e.issue(e.authority, 3*time.Minute) // revoked, expires 1s after the build
	otherIssuer := e.issue(e.otherAuth, time.Hour)  // revoked, another CA's
	at := t0.Add(10 * time.Second)
	e.revoke(keyCompromise, 1, at)
	e.revoke(unspecified, 0, at)
	e.revoke(expiring, 1, at)
	e.revoke(boundary, 4, at)
	e.revoke(otherIssuer, 1, at)

	// NotAfter is t0 + ttl; build when expiring has expired and boundary
	// has one second left.
	e.clock.Set(t0.Add(3*time.Minute - time.Second))
	_, rl := e.build()
	want := []string{keyCompromise, unspecified, boundary}
	slices.Sort(want)
	if got := serials(rl); !slices.Equal(got, want) {
		t.Fatalf("CRL lists %v, want exactly %v (revoked, unexpired, this issuer's)", got, want)
	}
	for _, r := range rl.RevokedCertificateEntries {
		if !r.RevocationTime.Equal(at) {
			t.Errorf("%x revoked at %s, want %s", r.SerialNumber, r.RevocationTime, at)
		}
	}
	// Two seconds later boundary has expired too and drops off.
	e.clock.Advance(2 * time.Second)
	_, rl = e.build()
	want = slices.DeleteFunc(want, func(s string) bool { return s == boundary })
	if got := serials(rl); !slices.Equal(got, want) {
		t.Fatalf("after boundary expired the CRL lists %v, want %v", got, want)
	}
	// The other issuer's revocation is in its own CRL.
	otherPub, err := crl.New(crl.Options{Issuer: e.other, Source: e.store, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	oc, err := otherPub.Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	orl, err := x509.ParseRevocationList(oc.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := orl.CheckSignatureFrom(e.other.Cert); err != nil {
		t.Fatal(err)
	}
	if got := serials(orl); !slices.Equal(got, []string{otherIssuer}) {
		t.Fatalf("other issuer's CRL lists %v, want [%s]", got, otherIssuer)
	}
}

func TestBuildTimes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validity time.Duration
		want     time.Duration
	}{
		{"default", 0, 10 * time.Minute},
		{"7m", 7 * time.Minute, 7 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, crl.Options{Validity: tc.validity})
			// A clock with a fraction of a second: thisUpdate is to the second.
			e.clock.Set(e.clock.Now().Add(1500 * time.Millisecond))
			now := e.clock.Now().Truncate(time.Second)
			c, rl := e.build()
			if !c.ThisUpdate.Equal(now) || !rl.ThisUpdate.Equal(now) {
				t.Errorf("thisUpdate %s / %s, want %s", c.ThisUpdate, rl.ThisUpdate, now)
			}
			if !c.NextUpdate.Equal(now.Add(tc.want)) || !rl.NextUpdate.Equal(now.Add(tc.want)) {
				t.Errorf("nextUpdate %s / %s, want %s", c.NextUpdate, rl.NextUpdate, now.Add(tc.want))
			}
		})
	}
}

func TestBuildSignature(t *testing.T) {
	e := newEnv(t, crl.Options{})
	e.revoke(e.issue(e.authority, 0), 1, e.clock.Now())
	c, rl := e.build()
	if err := rl.CheckSignatureFrom(e.other.Cert); err == nil {
		t.Error("the CRL verifies against another CA")
	}
	tampered := bytes.Clone(c.DER)
	tampered[len(tampered)-1] ^= 0xff
	if trl, err := x509.ParseRevocationList(tampered); err == nil && trl.CheckSignatureFrom(e.issuer.Cert) == nil {
		t.Error("a tampered CRL verifies")
	}
}

func TestBuildNumberStrictlyIncreases(t *testing.T) {
	e := newEnv(t, crl.Options{})
	var last *big.Int
	check := func(what string) *crl.CRL {
		t.Helper()
		c, _ := e.build()
		if last != nil && c.Number.Cmp(last) <= 0 {
			t.Fatalf("%s: CRL number %v after %v", what, c.Number, last)
		}
		last = c.Number
		return c
	}
	c := check("first build")
	// Derived from the build time: thisUpdate cut to the second.
	if c.Number.Cmp(big.NewInt(e.clock.Now().UnixNano())) != 0 || c.Number.Int64()/1e9 != c.ThisUpdate.Unix() {
		t.Errorf("number %v, want the build time in ns %d (thisUpdate %v)", c.Number, e.clock.Now().UnixNano(), c.ThisUpdate)
	}
	for i := range 5 {
		check("same instant " + string(rune('0'+i)))
	}
	e.clock.Advance(300 * time.Millisecond) // same second: thisUpdate is unchanged
	check("same second")
	e.clock.Advance(-time.Hour)
	check("clock an hour back")
	e.clock.Advance(-24 * time.Hour)
	check("clock a day back")
	e.clock.Advance(48 * time.Hour)
	c = check("clock forward")
	if c.Number.Cmp(big.NewInt(e.clock.Now().UnixNano())) != 0 {
		t.Errorf("after the clock moved forward, number %v, want the build time in ns %d", c.Number, e.clock.Now().UnixNano())
	}
	// Concurrent builds are serialised: all numbers differ.
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, err := e.publisher.Build(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[c.Number.String()] {
				t.Errorf("number %v used twice", c.Number)
			}
			seen[c.Number.String()] = true
		})
	}
	wg.Wait()
	if cur := e.publisher.Current().Number; cur.Cmp(last) <= 0 {
		t.Fatalf("number after concurrent builds %v, before %v", cur, last)
	}
}

func TestReasonCodesRoundTrip(t *testing.T) {
	e := newEnv(t, crl.Options{})
	bySerial := map[string]int{}
	for _, name := range crl.ReasonNames() {
		code, err := crl.ParseReason(name)
		if err != nil {
			t.Fatal(err)
		}
		s := e.issue(e.authority, 0)
		e.revoke(s, code, e.clock.Now())
		bySerial[s] = code
	}
	_, rl := e.build()
	if len(rl.RevokedCertificateEntries) != len(bySerial) {
		t.Fatalf("%d entries, want %d", len(rl.RevokedCertificateEntries), len(bySerial))
	}
	for _, r := range rl.RevokedCertificateEntries {
		s := hex.EncodeToString(r.SerialNumber.Bytes())
		want, ok := bySerial[s]
		if !ok {
			t.Fatalf("unexpected entry %s", s)
		}
		if r.ReasonCode != want {
			t.Errorf("%s (%s): reason %d, want %d", s, crl.ReasonName(want), r.ReasonCode, want)
		}
		has := slices.ContainsFunc(r.Extensions, func(x pkix.Extension) bool { return x.Id.Equal(oidReasonCode) })
		if want == 0 && has {
			t.Errorf("%s: unspecified carries a reasonCode extension; DER omits the default", s)
		}
		if want != 0 && !has {
			t.Errorf("%s (%s): no reasonCode extension", s, crl.ReasonName(want))
		}
	}
}

func TestBuildFailureKeepsCurrent(t *testing.T) {
	e := newEnv(t, crl.Options{})
	first, _ := e.build()
	e.store.Close()
	if _, err := e.publisher.Build(context.Background()); err == nil {
		t.Fatal("Build on a closed store succeeded")
	}
	if e.publisher.Current() != first {
		t.Fatal("a failed build replaced the published CRL")
	}
}

// waitFor polls cond every millisecond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func lists(c *crl.CRL, serial string) bool {
	if c == nil {
		return false
	}
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		return false
	}
	return slices.Contains(serials(rl), serial)
}

func TestRunRebuildsAfterChanged(t *testing.T) {
	// Run schedules with the wall clock, so this publisher uses it too.
	e := newEnv(t, crl.Options{Debounce: 20 * time.Millisecond, Now: time.Now})
	e.clock.Set(time.Now())
	first, _ := e.build()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.publisher.Run(ctx); close(done) }()
	defer func() {
		cancel()
		if !waitFor(2*time.Second, func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}) {
			t.Error("Run did not return after its context was cancelled")
		}
	}()

	for round := range 3 {
		serial := e.issue(e.authority, time.Hour)
		e.revoke(serial, 1, time.Now())
		start := time.Now()
		e.publisher.Changed()
		if !waitFor(time.Second, func() bool { return lists(e.publisher.Current(), serial) }) {
			t.Fatalf("round %d: the revocation is not in the CRL 1s after Changed", round)
		}
		t.Logf("round %d: in the CRL after %s", round, time.Since(start))
		if c := e.publisher.Current(); c.Number.Cmp(first.Number) <= 0 {
			t.Fatalf("rebuilt CRL number %v, first %v", c.Number, first.Number)
		}
		e.parse(e.publisher.Current())
	}

	// A burst of revocations: all of them are in the CRL within 1s.
	var burst []string
	for range 20 {
		s := e.issue(e.authority, time.Hour)
		e.revoke(s, 4, time.Now())
		burst = append(burst, s)
		e.publisher.Changed()
	}
	if !waitFor(time.Second, func() bool {
		c := e.publisher.Current()
		for _, s := range burst {
			if !lists(c, s) {
				return false
			}
		}
		return true
	}) {
		t.Fatal("a burst of revocations is not in the CRL within 1s")
	}
}

func TestRunRebuildsBeforeNextUpdate(t *testing.T) {
	// Validity 1.5s: Run rebuilds at two thirds of it, with no Changed.
	e := newEnv(t, crl.Options{Validity: 1500 * time.Millisecond, Now: time.Now})
	first, _ := e.build()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.publisher.Run(ctx)
	if !waitFor(3*time.Second, func() bool { return e.publisher.Current() != first }) {
		t.Fatal("no rebuild before nextUpdate")
	}
	c := e.publisher.Current()
	if !c.ThisUpdate.Before(first.NextUpdate) {
		t.Errorf("rebuilt at %s, after the previous nextUpdate %s", c.ThisUpdate, first.NextUpdate)
	}
	if c.Number.Cmp(first.Number) <= 0 {
		t.Errorf("number %v after %v", c.Number, first.Number)
	}
}

// Run without a first Build publishes one shortly.
func TestRunBuildsWithoutAPriorBuild(t *testing.T) {
	e := newEnv(t, crl.Options{Debounce: 10 * time.Millisecond, Now: time.Now})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.publisher.Run(ctx)
	e.publisher.Changed()
	if !waitFor(time.Second, func() bool { return e.publisher.Current() != nil }) {
		t.Fatal("no CRL 1s after Run and Changed")
	}
	e.parse(e.publisher.Current())
}
