package federation_test

import (
	"testing"

	"github.com/agentca/agentca/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzParseBundle: ParseBundle (bootstrap files, stored bundles) never
// panics, never accepts a bundle without an X.509 authority, and what it
// accepts survives Marshal → ParseBundle unchanged. Seeds are in
// testdata/fuzz/FuzzParseBundle.
func FuzzParseBundle(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA","x5c":["AA=="]}],"spiffe_refresh_hint":3}`))
	td := spiffeid.RequireTrustDomainFromString("b.example")
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := federation.ParseBundle(td, in)
		if err != nil {
			if b != nil {
				t.Fatal("a bundle with an error")
			}
			return
		}
		if len(b.X509Authorities()) == 0 || b.TrustDomain() != td {
			t.Fatalf("accepted a bundle with %d X.509 authorities of %s", len(b.X509Authorities()), b.TrustDomain())
		}
		out, err := b.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := federation.ParseBundle(td, out)
		if err != nil {
			t.Fatalf("ParseBundle(Marshal(b)): %v\n%s", err, out)
		}
		if !again.Equal(b) {
			t.Fatalf("the bundle changed across Marshal:\n%s", out)
		}
	})
}
