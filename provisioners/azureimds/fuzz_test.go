package azureimds_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/azureimds"
)

// FuzzAzureIMDSAttest feeds arbitrary tokens to Attest, which must never
// panic and must refuse with ErrUnauthorized whatever it does not accept.
// The nonce of the seeds in testdata/fuzz/FuzzAzureIMDSAttest (go test
// -update), signed by the test chain, is made outstanding before each
// input, so mutations reach the PKCS#7, chain and document checks.
func FuzzAzureIMDSAttest(f *testing.F) {
	f.Add(`{"nonce":"0123456789","signature":"MIAGCSqGSIb3DQEHAqCAMIACAQEx"}`)
	testChain(f)
	p := newProvisioner(f, "azure", testOptions, newClock(fuzzTime), 0)
	f.Fuzz(func(t *testing.T, token string) {
		azureimds.AddChallenge(p, fuzzNonce, fuzzTime.Add(-20*time.Second))
		id, err := p.Attest(context.Background(), token)
		if err != nil {
			if !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("Attest error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if len(id.Once) != 1 || id.Claims["subscription_id"] != testSubscription {
			t.Fatalf("accepted %+v", id)
		}
	})
}
