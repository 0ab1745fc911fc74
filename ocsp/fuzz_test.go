package ocsp_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"math/big"
	"testing"
	"time"

	"github.com/agentca/agentca/ocsp"
	xocsp "golang.org/x/crypto/ocsp"
)

// FuzzRespond: any request bytes give either a signed response that
// verifies against the issuer, or one of the three unsigned error
// responses; never a panic. The committed seeds (testdata/fuzz/FuzzRespond)
// cover the structure of requests from another CA and broken encodings;
// the seeds added here are requests this responder's issuer answers.
func FuzzRespond(f *testing.F) {
	e := newEnv(f, envOptions{validity: time.Minute})
	ctx := context.Background()
	good, revoked := e.issue(0), e.issue(0)
	if _, err := e.bolt.Revoke(ctx, hex.EncodeToString(revoked.SerialNumber.Bytes()), xocsp.KeyCompromise, e.clock.Now()); err != nil {
		f.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384} {
		f.Add(e.request(good, h))
		f.Add(e.request(revoked, h))
	}
	unknown := *good
	unknown.SerialNumber = new(big.Int).Add(good.SerialNumber, big.NewInt(1))
	f.Add(e.request(&unknown, 0))
	f.Add(joinRequests(f, e.request(good, 0), e.request(revoked, 0)))
	valid := e.request(good, 0)
	f.Add(valid[:len(valid)-3])
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, der []byte) {
		resp, body, err := e.responder.Respond(ctx, der)
		_, parseErr := xocsp.ParseRequest(der)
		if resp == nil {
			if err == nil {
				t.Fatal("no response and no error")
			}
			switch {
			case bytes.Equal(body, ocsp.MalformedResponse), bytes.Equal(body, ocsp.UnauthorizedResponse), bytes.Equal(body, ocsp.InternalResponse):
			default:
				t.Fatalf("body %x is none of the error responses", body)
			}
			if parseErr != nil && !bytes.Equal(body, ocsp.MalformedResponse) {
				t.Fatalf("an unparsable request got %x, want malformedRequest", body)
			}
			return
		}
		if err != nil {
			t.Fatalf("a signed response with error %v", err)
		}
		if parseErr != nil {
			t.Fatalf("a signed response to a request that does not parse (%v)", parseErr)
		}
		if !bytes.Equal(body, resp.DER) {
			t.Fatal("body is not the response's DER")
		}
		parsed, err := xocsp.ParseResponse(body, e.issuer.Cert)
		if err != nil {
			t.Fatalf("the signed response does not verify: %v", err)
		}
		switch parsed.Status {
		case xocsp.Good, xocsp.Revoked, xocsp.Unknown:
		default:
			t.Fatalf("status %d", parsed.Status)
		}
	})
}
