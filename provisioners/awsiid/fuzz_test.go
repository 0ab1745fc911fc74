package awsiid_test

import (
	"context"
	"errors"
	"testing"

	"github.com/agentca/agentca/provisioners"
)

// FuzzAWSAttest feeds arbitrary tokens to Attest, which must never panic
// and must refuse with ErrUnauthorized whatever it does not accept. The
// seeds in testdata/fuzz/FuzzAWSAttest (go test -update) are signed by the
// test certificate, so mutations reach the PKCS#7 and document checks.
func FuzzAWSAttest(f *testing.F) {
	f.Add(`{"document":"e30=","rsa2048":"MIAGCSqGSIb3DQEHAqCAMIACAQEx"}`)
	p := newProvisioner(f, "aws", testOptions, start)
	f.Fuzz(func(t *testing.T, token string) {
		id, err := p.Attest(context.Background(), token)
		if err != nil {
			if !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("Attest error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if len(id.Once) != 1 || id.Claims["account"] != testAccount {
			t.Fatalf("accepted %+v", id)
		}
	})
}
