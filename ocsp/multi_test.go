package ocsp_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/agentca/agentca/ocsp"
	xocsp "golang.org/x/crypto/ocsp"
)

// The RFC 6960 request structure, to build requests naming several
// certificates (x/crypto/ocsp writes one only).
type testCertID struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	NameHash      []byte
	IssuerKeyHash []byte
	SerialNumber  *big.Int
}

type testRequest struct{ Cert testCertID }

type testTBSRequest struct {
	Version     int `asn1:"explicit,tag:0,default:0,optional"`
	RequestList []testRequest
}

type testOCSPRequest struct{ TBSRequest testTBSRequest }

// joinRequests is one OCSP request naming every certificate of the
// single-certificate requests ders, in order.
func joinRequests(t testing.TB, ders ...[]byte) []byte {
	t.Helper()
	var out testOCSPRequest
	for _, der := range ders {
		var one testOCSPRequest
		if rest, err := asn1.Unmarshal(der, &one); err != nil || len(rest) > 0 {
			t.Fatalf("unmarshal: %v", err)
		}
		out.TBSRequest.RequestList = append(out.TBSRequest.RequestList, one.TBSRequest.RequestList...)
	}
	b, err := asn1.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRespondSeveralCertificates: a request naming two (or more)
// certificates is refused with malformedRequest, never answered for the
// first only; the same request for one certificate, re-encoded the same
// way, is answered.
func TestRespondSeveralCertificates(t *testing.T) {
	e := newEnv(t, envOptions{})
	a, b := e.issue(0), e.issue(0)
	ra, rb := e.request(a, 0), e.request(b, 0)
	if _, parsed := e.respond(joinRequests(t, ra), a); parsed.Status != xocsp.Good {
		t.Fatalf("one certificate re-encoded: status %d", parsed.Status)
	}
	for name, der := range map[string][]byte{
		"two":            joinRequests(t, ra, rb),
		"the same twice": joinRequests(t, ra, ra),
		"three":          joinRequests(t, ra, rb, ra),
	} {
		resp, body, err := e.responder.Respond(context.Background(), der)
		if resp != nil || err == nil || !bytes.Equal(body, ocsp.MalformedResponse) {
			t.Errorf("%s: resp %v err %v body %x, want malformedRequest", name, resp != nil, err, body)
		}
	}
	// No certificate at all: malformed too.
	var empty testOCSPRequest
	der, err := asn1.Marshal(empty)
	if err != nil {
		t.Fatal(err)
	}
	if _, body, _ := e.responder.Respond(context.Background(), der); !bytes.Equal(body, ocsp.MalformedResponse) {
		t.Errorf("an empty requestList: body %x, want malformedRequest", body)
	}
}

// TestUnknownCacheBounded: unknown answers are cached (a repeat is not
// re-signed) up to a bound; beyond it each is signed per request.
func TestUnknownCacheBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("signs MaxUnknown responses")
	}
	e := newEnv(t, envOptions{})
	ask := func(serial int64) int64 {
		t.Helper()
		c := &x509.Certificate{SerialNumber: big.NewInt(serial)}
		before := e.store.reads.Load()
		if _, _, err := e.responder.Respond(context.Background(), e.request(c, 0)); err != nil {
			t.Fatal(err)
		}
		return e.store.reads.Load() - before
	}
	for i := range int64(ocsp.MaxUnknown + 5) {
		if n := ask(1000 + i); n != 1 {
			t.Fatalf("first request for serial %d: %d reads", 1000+i, n)
		}
	}
	if n := ask(1000); n != 0 {
		t.Errorf("a cached unknown answer was signed again (%d reads)", n)
	}
	if n := ask(1000 + ocsp.MaxUnknown + 2); n != 1 {
		t.Errorf("beyond the bound: %d reads, want 1 (not cached)", n)
	}
	// Forgetting the cache makes room again.
	e.responder.Forget(e.clock.Now().Add(time.Hour))
	ask(5)
	if n := ask(5); n != 0 {
		t.Errorf("after Forget, unknown answers are not cached again (%d reads)", n)
	}
}

// TestRevokedMarksShrink: the mark kept for a revoked certificate goes
// once the certificate has been expired for a validity period.
func TestRevokedMarksShrink(t *testing.T) {
	const validity = time.Minute
	e := newEnv(t, envOptions{validity: validity})
	ctx := context.Background()
	short, long := e.issue(10*time.Minute), e.issue(time.Hour)
	for _, c := range []*x509.Certificate{short, long} {
		rec, err := e.bolt.Revoke(ctx, hex.EncodeToString(c.SerialNumber.Bytes()), xocsp.KeyCompromise, e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		e.responder.Revoked(ctx, rec)
	}
	if n := e.responder.RevokedMarks(); n != 2 {
		t.Fatalf("%d marks, want 2", n)
	}
	e.clock.Advance(10*time.Minute + validity + time.Second)
	e.responder.Forget(e.clock.Now().Add(-validity))
	if n := e.responder.RevokedMarks(); n != 1 {
		t.Fatalf("%d marks after the short certificate expired, want 1", n)
	}
	// The long one still answers revoked.
	if _, parsed := e.respond(e.request(long, 0), long); parsed.Status != xocsp.Revoked {
		t.Fatalf("status %d, want revoked", parsed.Status)
	}
}
