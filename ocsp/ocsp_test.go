package ocsp_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
	xocsp "golang.org/x/crypto/ocsp"
)

func TestNewRequiresStore(t *testing.T) {
	if _, err := ocsp.New(ocsp.Options{}); err == nil {
		t.Fatal("New without a Store succeeded")
	}
}

func TestRespondGood(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.issue(0)
	now := e.clock.Now()
	resp, parsed := e.respond(e.request(leaf, 0), leaf)
	if parsed.Status != xocsp.Good {
		t.Fatalf("status %d, want good", parsed.Status)
	}
	if parsed.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("serial %x, want %x", parsed.SerialNumber, leaf.SerialNumber)
	}
	// Default validity is five minutes; thisUpdate is now, to the second.
	if !parsed.ThisUpdate.Equal(now) || !parsed.NextUpdate.Equal(now.Add(5*time.Minute)) {
		t.Errorf("thisUpdate %s nextUpdate %s, want %s and +5m", parsed.ThisUpdate, parsed.NextUpdate, now)
	}
	if !resp.ThisUpdate.Equal(parsed.ThisUpdate) || !resp.NextUpdate.Equal(parsed.NextUpdate) {
		t.Errorf("Response times %s/%s differ from the DER's %s/%s", resp.ThisUpdate, resp.NextUpdate, parsed.ThisUpdate, parsed.NextUpdate)
	}
	sum := sha256.Sum256(resp.DER)
	if want := `"` + hex.EncodeToString(sum[:16]) + `"`; resp.ETag != want {
		t.Errorf("ETag %s, want %s", resp.ETag, want)
	}
	// Lookup (for stapling) finds the same cached response.
	got, err := e.responder.Lookup(context.Background(), e.issuer.SKI, leaf.SerialNumber)
	if err != nil || !bytes.Equal(got.DER, resp.DER) {
		t.Errorf("Lookup = %v, %v; want the cached response", got, err)
	}
	if _, err := e.responder.Lookup(context.Background(), "00ff", leaf.SerialNumber); err == nil {
		t.Error("Lookup for an unknown issuer succeeded")
	}
}

// Every kind of issuing CA key: the CertID key hash and the responder
// certificate's signature depend on it.
func TestRespondGoodEveryIssuerKeyType(t *testing.T) {
	for _, kt := range ca.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			e := newEnv(t, envOptions{keyType: kt})
			leaf := e.issue(0)
			for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
				_, parsed := e.respond(e.request(leaf, h), leaf)
				if parsed.Status != xocsp.Good {
					t.Errorf("%v: status %d, want good", h, parsed.Status)
				}
			}
		})
	}
}

func TestRespondSHA1AndSHA256CertIDs(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		t.Run(h.String(), func(t *testing.T) {
			leaf := e.issue(0)
			_, parsed := e.respond(e.request(leaf, h), leaf)
			if parsed.Status != xocsp.Good || parsed.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Fatalf("status %d serial %x, want good for %x", parsed.Status, parsed.SerialNumber, leaf.SerialNumber)
			}
		})
	}
}

// RFC 6960 §4.2.1/§4.2.2.3: a SingleResponse names the certificate by the
// CertID the client sent, and clients such as openssl (OCSP_resp_find,
// OCSP_id_cmp) look their status up by comparing the whole CertID,
// hashAlgorithm included. A SHA-256 request must get a SHA-256 CertID
// back, even when a SHA-1 request for the same serial came first.
func TestResponseCertIDEchoesRequest(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		t.Run(h.String(), func(t *testing.T) {
			leaf := e.issue(0) // nothing cached for it yet
			req := e.request(leaf, h)
			resp, parsed := e.respond(req, leaf)
			if parsed.IssuerHash != h {
				t.Errorf("response CertID hash %v, request's %v", parsed.IssuerHash, h)
			}
			if !bytes.Contains(resp.DER, requestCertID(t, req)) {
				t.Errorf("the response does not carry the request's CertID %x", requestCertID(t, req))
			}
		})
	}
}

func TestRespondRevoked(t *testing.T) {
	reasons := []struct {
		name string
		code int
	}{
		{"unspecified", xocsp.Unspecified},
		{"keyCompromise", xocsp.KeyCompromise},
		{"cACompromise", xocsp.CACompromise},
		{"affiliationChanged", xocsp.AffiliationChanged},
		{"superseded", xocsp.Superseded},
		{"cessationOfOperation", xocsp.CessationOfOperation},
		{"privilegeWithdrawn", xocsp.PrivilegeWithdrawn},
		{"aACompromise", xocsp.AACompromise},
	}
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for _, r := range reasons {
		t.Run(r.name, func(t *testing.T) {
			leaf := e.issue(0)
			req := e.request(leaf, 0)
			good, parsed := e.respond(req, leaf)
			if parsed.Status != xocsp.Good {
				t.Fatalf("before revocation: status %d", parsed.Status)
			}
			at := e.clock.Now().Add(-3 * time.Second)
			rec, err := e.bolt.Revoke(ctx, hex.EncodeToString(leaf.SerialNumber.Bytes()), r.code, at)
			if err != nil {
				t.Fatal(err)
			}
			readsBefore := e.store.reads.Load()
			e.responder.Revoked(ctx, rec)
			if e.store.reads.Load() != readsBefore+1 {
				t.Errorf("Revoked made %d signatures, want 1 (re-signed at once)", e.store.reads.Load()-readsBefore)
			}
			// The clock has not moved: the good response would still be
			// fresh, yet the next answer is the revocation.
			resp, parsed := e.respond(req, leaf)
			if bytes.Equal(resp.DER, good.DER) {
				t.Fatal("the cached good response is still served after Revoked")
			}
			if parsed.Status != xocsp.Revoked {
				t.Fatalf("status %d, want revoked", parsed.Status)
			}
			if !parsed.RevokedAt.Equal(at) || parsed.RevocationReason != r.code {
				t.Errorf("revoked at %s reason %d, want %s reason %d", parsed.RevokedAt, parsed.RevocationReason, at, r.code)
			}
			// No further signature: the re-signed response is cached.
			readsBefore = e.store.reads.Load()
			again, _ := e.respond(req, leaf)
			if !bytes.Equal(again.DER, resp.DER) || e.store.reads.Load() != readsBefore {
				t.Error("the revoked response was not cached")
			}
		})
	}
	// Revoked with a record whose serial is not hex does nothing.
	e.responder.Revoked(ctx, &store.Certificate{Serial: "not hex", IssuerSKI: e.issuer.SKI})
}

func TestRespondUnknown(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.issue(0)
	never := &x509.Certificate{SerialNumber: new(big.Int).Add(leaf.SerialNumber, big.NewInt(1))}
	req := e.request(never, 0)
	for i := range 2 {
		reads := e.store.reads.Load()
		resp, body, err := e.responder.Respond(context.Background(), req)
		if err != nil || resp == nil {
			t.Fatalf("Respond: %v", err)
		}
		parsed, err := xocsp.ParseResponseForCert(body, never, e.issuer.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Status != xocsp.Unknown {
			t.Fatalf("status %d, want unknown", parsed.Status)
		}
		// The unknown answer is cached: only the first request reads
		// the store (and signs).
		if got, want := e.store.reads.Load()-reads, int64(1-i); got != want {
			t.Errorf("request %d: %d store reads, want %d (unknown answers are cached)", i, got, want)
		}
	}
}

// A certificate another issuer recorded in the same store is unknown to
// this issuer.
func TestRespondOtherIssuersSerialIsUnknown(t *testing.T) {
	a := newEnv(t, envOptions{})
	b := newEnv(t, envOptions{name: "agentca-ocsp-other", bolt: a.bolt})
	leafB := b.issue(0)
	// Ask a's responder about b's serial as if a had issued it.
	claimed := &x509.Certificate{SerialNumber: leafB.SerialNumber}
	_, parsed := a.respond(a.request(claimed, 0), claimed)
	if parsed.Status != xocsp.Unknown {
		t.Fatalf("status %d, want unknown", parsed.Status)
	}
}

// With two issuers served by one responder (during an anchor rotation the
// old issuer keeps answering OCSP), a request naming issuer B for a serial
// that issuer A issued must not get A's cached "good": B never issued it,
// and the answer must be B's (unknown), signed by B's responder.
func TestRespondCachedSerialUnderAnotherIssuer(t *testing.T) {
	a := newEnv(t, envOptions{})
	b := newEnv(t, envOptions{name: "agentca-ocsp-other", bolt: a.bolt})
	if err := a.responder.SetSigner(b.signer); err != nil {
		t.Fatal(err)
	}
	leafA := a.issue(0)
	if _, parsed := a.respond(a.request(leafA, 0), leafA); parsed.Status != xocsp.Good {
		t.Fatalf("status %d, want good", parsed.Status)
	}
	claimed := &x509.Certificate{SerialNumber: leafA.SerialNumber}
	_, body, err := a.responder.Respond(context.Background(), b.request(claimed, 0))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := xocsp.ParseResponseForCert(body, claimed, b.issuer.Cert)
	if err != nil {
		t.Fatalf("the answer about issuer B does not verify against B: %v", err)
	}
	if parsed.Status != xocsp.Unknown {
		t.Fatalf("status %d, want unknown", parsed.Status)
	}
}

func TestRespondUnauthorized(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := newEnv(t, envOptions{name: "agentca-ocsp-foreign"})
	leaf := other.issue(0)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		resp, body, err := e.responder.Respond(context.Background(), other.request(leaf, h))
		if resp != nil || err == nil || !bytes.Equal(body, ocsp.UnauthorizedResponse) {
			t.Fatalf("%v: Respond = %v, %x, %v; want the unauthorized response", h, resp, body, err)
		}
		if _, err := xocsp.ParseResponse(body, nil); !errors.Is(err, xocsp.ResponseError{Status: xocsp.Unauthorized}) {
			t.Errorf("%v: the body parses as %v, want unauthorized", h, err)
		}
	}
	// Same issuer name, other key: the key hash must match too.
	spoof := &xocsp.Request{HashAlgorithm: crypto.SHA1, SerialNumber: leaf.SerialNumber}
	good, err := xocsp.ParseRequest(e.request(leaf, crypto.SHA1))
	if err != nil {
		t.Fatal(err)
	}
	spoof.IssuerNameHash = good.IssuerNameHash
	spoof.IssuerKeyHash = make([]byte, 20)
	der, err := spoof.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, body, _ := e.responder.Respond(context.Background(), der); !bytes.Equal(body, ocsp.UnauthorizedResponse) {
		t.Errorf("wrong issuer key hash: body %x, want unauthorized", body)
	}
}

func TestRespondMalformed(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.issue(0)
	valid := e.request(leaf, 0)
	parsed, err := xocsp.ParseRequest(valid)
	if err != nil {
		t.Fatal(err)
	}
	marshal := func(h crypto.Hash, serial *big.Int) []byte {
		r := *parsed
		r.HashAlgorithm, r.SerialNumber = h, serial
		if h != crypto.SHA1 {
			sum := h.New()
			sum.Write(e.issuer.Cert.RawSubject)
			r.IssuerNameHash = sum.Sum(nil)
		}
		der, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	big161 := new(big.Int).Lsh(big.NewInt(1), 160)
	cases := map[string][]byte{
		"nil":                 nil,
		"empty":               {},
		"garbage":             []byte("this is not an OCSP request"),
		"one byte":            {0x30},
		"truncated by one":    valid[:len(valid)-1],
		"truncated by half":   valid[:len(valid)/2],
		"trailing data":       append(append([]byte{}, valid...), 0),
		"bad outer length":    append([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, valid[2:]...),
		"SHA-384 CertID":      e.request(leaf, crypto.SHA384),
		"SHA-512 CertID":      e.request(leaf, crypto.SHA512),
		"zero serial":         marshal(crypto.SHA1, big.NewInt(0)),
		"negative serial":     marshal(crypto.SHA1, big.NewInt(-5)),
		"serial of 161 bits":  marshal(crypto.SHA1, big161),
		"empty request list":  {0x30, 0x04, 0x30, 0x02, 0x30, 0x00},
		"a certificate":       leaf.Raw,
		"a response":          ocsp.UnauthorizedResponse,
		"an integer":          {0x02, 0x01, 0x01},
		"unknown hash OID":    bytes.Replace(valid, []byte{0x2b, 0x0e, 0x03, 0x02, 0x1a}, []byte{0x2b, 0x0e, 0x03, 0x02, 0x1b}, 1),
		"signed request flag": append([]byte{}, valid...),
	}
	// "signed request flag": an optionalSignature [0] after tbsRequest.
	{
		sig := []byte{0xa0, 0x03, 0x30, 0x01, 0x00}
		inner := append(append([]byte{}, valid[2:]...), sig...)
		cases["signed request flag"] = append([]byte{0x30, byte(len(inner))}, inner...)
	}
	for name, der := range cases {
		t.Run(name, func(t *testing.T) {
			resp, body, err := e.responder.Respond(context.Background(), der)
			if resp != nil || err == nil || !bytes.Equal(body, ocsp.MalformedResponse) {
				t.Fatalf("Respond = %v, %x, %v; want the malformedRequest response", resp, body, err)
			}
		})
	}
	if _, err := xocsp.ParseResponse(ocsp.MalformedResponse, nil); !errors.Is(err, xocsp.ResponseError{Status: xocsp.Malformed}) {
		t.Errorf("MalformedResponse parses as %v", err)
	}
	// A serial of exactly 160 bits is in range: unknown, not malformed.
	max160 := new(big.Int).Sub(big161, big.NewInt(1))
	if resp, _, err := e.responder.Respond(context.Background(), marshal(crypto.SHA1, max160)); resp == nil {
		t.Errorf("160-bit serial: %v", err)
	}
}

func TestResponderCertificate(t *testing.T) {
	e := newEnv(t, envOptions{})
	rc := e.signer.Cert
	if len(rc.ExtKeyUsage) != 1 || rc.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning {
		t.Errorf("responder EKU %v, want exactly OCSPSigning", rc.ExtKeyUsage)
	}
	if rc.IsCA || rc.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Errorf("responder CA %v key usage %b", rc.IsCA, rc.KeyUsage)
	}
	nocheck := false
	for _, ext := range rc.Extensions {
		if ext.Id.Equal(oidOCSPNoCheck) {
			nocheck = true
			if !bytes.Equal(ext.Value, []byte{0x05, 0x00}) {
				t.Errorf("id-pkix-ocsp-nocheck value %x, want NULL", ext.Value)
			}
		}
	}
	if !nocheck {
		t.Error("the responder certificate has no id-pkix-ocsp-nocheck (1.3.6.1.5.5.7.48.1.5)")
	}
	if err := rc.CheckSignatureFrom(e.issuer.Cert); err != nil {
		t.Errorf("responder certificate not issued by the issuer: %v", err)
	}

	leaf := e.issue(0)
	_, parsed := e.respond(e.request(leaf, 0), leaf)
	if parsed.Certificate == nil || !bytes.Equal(parsed.Certificate.Raw, rc.Raw) {
		t.Fatal("the response does not embed the delegated responder certificate")
	}
	if !bytes.Equal(parsed.RawResponderName, rc.RawSubject) {
		t.Error("responderID is not the responder certificate's name")
	}
	if err := parsed.CheckSignatureFrom(rc); err != nil {
		t.Errorf("signature: %v", err)
	}
	// The issuer's own key did not sign it, and another CA does not
	// vouch for the responder.
	if err := parsed.CheckSignatureFrom(e.issuer.Cert); err == nil {
		t.Error("the response verifies directly against the issuer key; want the delegated responder's signature")
	}
	other := newEnv(t, envOptions{name: "agentca-ocsp-foreign"})
	if _, err := xocsp.ParseResponseForCert(parsed.Raw, leaf, other.issuer.Cert); err == nil {
		t.Error("the response verifies against another CA")
	}
}

func TestSetSigner(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := newEnv(t, envOptions{name: "agentca-ocsp-foreign"})
	// A responder certificate from another CA, presented for this issuer.
	foreign := &ocsp.Signer{Issuer: e.issuer.Cert, Cert: other.signer.Cert, Key: other.signer.Key}
	if err := e.responder.SetSigner(foreign); err == nil {
		t.Fatal("SetSigner accepted a responder certificate the issuer did not sign")
	}
	// The issuer certificate itself is not signed by the issuer either.
	if err := e.responder.SetSigner(&ocsp.Signer{Issuer: e.issuer.Cert, Cert: e.issuer.Cert, Key: e.issuer.Signer}); err == nil {
		t.Fatal("SetSigner accepted the issuing CA certificate as its own responder")
	}
	// The refused signer was not installed: answers still come from the
	// first responder certificate.
	unknown := &x509.Certificate{SerialNumber: big.NewInt(0x1234567)}
	_, parsed := e.respond(e.request(unknown, 0), unknown)
	if !bytes.Equal(parsed.Certificate.Raw, e.signer.Cert.Raw) {
		t.Fatal("a refused signer is in use")
	}
	// A renewed responder certificate replaces the old one for new
	// signatures.
	renewed := e.newSigner()
	if err := e.responder.SetSigner(renewed); err != nil {
		t.Fatal(err)
	}
	unknown = &x509.Certificate{SerialNumber: big.NewInt(0x1234568)}
	_, parsed = e.respond(e.request(unknown, 0), unknown)
	if !bytes.Equal(parsed.Certificate.Raw, renewed.Cert.Raw) {
		t.Fatal("new signatures do not use the renewed responder certificate")
	}
}

func TestCacheUntilTwoThirdsOfValidity(t *testing.T) {
	const validity = 3 * time.Minute // renewal at 2m
	e := newEnv(t, envOptions{validity: validity})
	leaf := e.issue(time.Hour)
	req := e.request(leaf, 0)
	t0 := e.clock.Now()
	first, parsed := e.respond(req, leaf)
	if !parsed.ThisUpdate.Equal(t0) || !parsed.NextUpdate.Equal(t0.Add(validity)) {
		t.Fatalf("thisUpdate %s nextUpdate %s", parsed.ThisUpdate, parsed.NextUpdate)
	}
	reads := e.store.reads.Load()
	for _, d := range []time.Duration{0, time.Second, time.Minute, 2*time.Minute - time.Second, 2*time.Minute - time.Nanosecond} {
		e.clock.Set(t0.Add(d))
		got, _ := e.respond(req, leaf)
		if !bytes.Equal(got.DER, first.DER) || got.ETag != first.ETag {
			t.Fatalf("at +%s the response changed before two thirds of its validity", d)
		}
	}
	if e.store.reads.Load() != reads {
		t.Fatalf("%d signatures while the response was cached", e.store.reads.Load()-reads)
	}
	e.clock.Set(t0.Add(2 * time.Minute))
	second, parsed := e.respond(req, leaf)
	if bytes.Equal(second.DER, first.DER) || second.ETag == first.ETag {
		t.Fatal("the response was not re-signed at two thirds of its validity")
	}
	if want := t0.Add(2 * time.Minute); !parsed.ThisUpdate.Equal(want) || !parsed.NextUpdate.Equal(want.Add(validity)) {
		t.Fatalf("re-signed thisUpdate %s nextUpdate %s, want %s and +%s", parsed.ThisUpdate, parsed.NextUpdate, want, validity)
	}
	// And the new one is cached in turn.
	e.clock.Advance(time.Minute)
	third, _ := e.respond(req, leaf)
	if !bytes.Equal(third.DER, second.DER) {
		t.Fatal("the re-signed response is not cached")
	}
}

func TestConcurrentRequestsSignOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.issue(0)
	req := e.request(leaf, 0)
	release := make(chan struct{})
	var once sync.Once
	pause := func() { once.Do(func() { <-release }) } // hold the first signature
	e.store.pause.Store(&pause)
	const n = 32
	results := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, _, err := e.responder.Respond(context.Background(), req)
			if err != nil {
				t.Error(err)
				return
			}
			results[i] = resp.DER
		})
	}
	// Every other request is parked on the signature in flight.
	waitGoroutines(t, n-1, nil, parkedInFlight)
	close(release)
	wg.Wait()
	e.store.pause.Store(nil)
	if got := e.store.reads.Load(); got != 1 {
		t.Errorf("%d signatures for %d concurrent requests, want 1", got, n)
	}
	for i, r := range results {
		if !bytes.Equal(r, results[0]) {
			t.Fatalf("response %d differs from response 0", i)
		}
	}
	if _, err := xocsp.ParseResponseForCert(results[0], leaf, e.issuer.Cert); err != nil {
		t.Fatal(err)
	}
}

// Many concurrent requests for many serials, under the race detector.
func TestConcurrentRequestsManySerials(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaves := make([]*x509.Certificate, 8)
	reqs := make([][]byte, len(leaves))
	for i := range leaves {
		leaves[i] = e.issue(0)
		reqs[i] = e.request(leaves[i], crypto.Hash(0))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				k := (g + i) % len(leaves)
				_, body, err := e.responder.Respond(context.Background(), reqs[k])
				if err != nil {
					t.Error(err)
					return
				}
				if r, err := xocsp.ParseResponseForCert(body, leaves[k], e.issuer.Cert); err != nil || r.Status != xocsp.Good {
					t.Errorf("serial %d: %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := e.store.reads.Load(); got != int64(len(leaves)) {
		t.Logf("%d signatures for %d serials (more than one per serial means a request missed both the cache and the signature in flight)", got, len(leaves))
	}
}

// A revocation that lands while a response for the same serial is being
// signed from the record read just before it must still show at once:
// Revoked must not adopt (and leave cached) the stale "good" signature in
// flight. The store read is held open so that the interleaving is
// deterministic.
func TestRevokedWhileSigningInFlight(t *testing.T) {
	e := newEnv(t, envOptions{})
	leaf := e.issue(0)
	req := e.request(leaf, 0)
	ctx := context.Background()

	release := make(chan struct{})
	var once sync.Once
	pause := func() { once.Do(func() { <-release }) }
	e.store.pause.Store(&pause)
	inFlight := make(chan []byte, 1)
	go func() {
		_, body, _ := e.responder.Respond(ctx, req) // reads "good", then waits
		inFlight <- body
	}()
	waitGoroutines(t, 1, nil, func(header, stack string) bool {
		return strings.Contains(stack, "ocsp_test.(*countingStore).Certificate(")
	})

	rec, err := e.bolt.Revoke(ctx, hex.EncodeToString(leaf.SerialNumber.Bytes()), xocsp.KeyCompromise, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	revoked := make(chan struct{})
	go func() {
		e.responder.Revoked(ctx, rec)
		close(revoked)
	}()
	// Revoked is parked (on the signature in flight, or on its own read
	// of the store, which the paused read holds up) or finished; only then
	// does the stale signature complete.
	waitGoroutines(t, 1, revoked, func(header, stack string) bool {
		return strings.Contains(stack, "ocsp.(*Responder).Revoked(") &&
			(parkedInFlight(header, stack) || strings.Contains(stack, "ocsp_test.(*countingStore).Certificate("))
	})
	close(release)
	<-inFlight
	<-revoked
	e.store.pause.Store(nil)

	_, parsed := e.respond(req, leaf)
	if parsed.Status != xocsp.Revoked {
		t.Fatalf("after store.Revoke and Responder.Revoked returned, OCSP still answers status %d (good) from a response signed from the pre-revocation record; it stays cached until two thirds of the validity", parsed.Status)
	}
}

func TestForget(t *testing.T) {
	const validity = 5 * time.Minute
	e := newEnv(t, envOptions{validity: validity})
	a, b := e.issue(time.Hour), e.issue(time.Hour)
	reqA, reqB := e.request(a, 0), e.request(b, 0)
	t0 := e.clock.Now()
	e.respond(reqA, a)
	e.clock.Advance(time.Minute)
	e.respond(reqB, b)
	// A's nextUpdate is t0+5m, B's t0+6m.
	if n := e.responder.Forget(t0.Add(validity)); n != 0 {
		t.Fatalf("Forget(A's nextUpdate) dropped %d, want 0 (only strictly earlier ones go)", n)
	}
	if n := e.responder.Forget(t0.Add(validity + 30*time.Second)); n != 1 {
		t.Fatalf("Forget dropped %d entries, want 1 (A)", n)
	}
	// A is signed again although its old response was not yet due; B is
	// still cached.
	reads := e.store.reads.Load()
	e.respond(reqB, b)
	if e.store.reads.Load() != reads {
		t.Error("B was dropped")
	}
	e.respond(reqA, a)
	if e.store.reads.Load() != reads+1 {
		t.Error("A was not dropped")
	}
	if n := e.responder.Forget(t0.Add(time.Hour)); n != 2 {
		t.Fatalf("Forget(+1h) dropped %d, want 2", n)
	}
	if n := e.responder.Forget(t0.Add(time.Hour)); n != 0 {
		t.Fatalf("second Forget dropped %d, want 0", n)
	}
}

// The responder never answers with a status for a malformed CertID: an
// ASN.1 sanity check of what the error constants are.
func TestErrorResponsesAreRFC6960(t *testing.T) {
	for name, c := range map[string]struct {
		der    []byte
		status int
	}{
		"malformed":    {ocsp.MalformedResponse, 1},
		"internal":     {ocsp.InternalResponse, 2},
		"unauthorized": {ocsp.UnauthorizedResponse, 6},
	} {
		var v struct{ Status asn1.Enumerated }
		if rest, err := asn1.Unmarshal(c.der, &v); err != nil || len(rest) != 0 || int(v.Status) != c.status {
			t.Errorf("%s: %x is not OCSPResponse{responseStatus %d}", name, c.der, c.status)
		}
	}
}
