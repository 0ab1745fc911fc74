package k8ssa_test

import (
	"context"
	"errors"
	"testing"

	"go.step.sm/crypto/jose"

	"github.com/agentca/agentca/provisioners"
	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
	"github.com/agentca/agentca/provisioners/k8ssa"
)

// FuzzK8sAttest: no token string panics Attest, every refusal is
// ErrUnauthorized, and a token is accepted only if it verifies with the
// cluster's key. Seeds: testdata/fuzz/FuzzK8sAttest and, added here, valid
// tokens signed by this run's key.
func FuzzK8sAttest(f *testing.F) {
	clk := jt.NewClock()
	cl := newCluster(f)
	cfg := &k8ssa.Config{Issuer: issuer, Audience: aud, JWKSFile: jt.WriteFile(f, "jwks.json", cl.jwks),
		Namespaces: []string{"prod"}}
	p, err := k8ssa.New("k8s", cfg, k8ssa.Options{Now: clk.Now, SingleUse: true})
	if err != nil {
		f.Fatal(err)
	}
	good := podToken(clk.Now(), "prod", "web", "web-0")
	f.Add(cl.sign(f, good))
	f.Add(cl.sign(f, set(good, "kubernetes.io.pod", "x")))
	f.Add(cl.sign(f, set(good, "jti", 5)))
	f.Add(jt.HS256(f, cl.key.PublicPEM(f), cl.key.KID, good))
	f.Add(jt.Unsigned(map[string]any{"alg": "RS256", "kid": cl.key.KID}, good))
	pub := cl.key.Signer.Public()
	f.Fuzz(func(t *testing.T, token string) {
		id, err := p.Attest(context.Background(), token)
		if err != nil {
			if id != nil || !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("Attest = %v, %v", id, err)
			}
			return
		}
		tok, perr := jose.ParseSigned(token)
		if perr != nil || tok.Claims(pub) != nil {
			t.Fatalf("accepted a token the cluster key does not verify: %q", token)
		}
		if id.Claims["namespace"] != "prod" || len(id.Once) != 1 {
			t.Fatalf("identity = %+v", id)
		}
	})
}

// BenchmarkAttest is the cost of one offline enrollment attestation (JWT
// parse, signature, claims), the keys cached.
func BenchmarkAttest(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			clk := jt.NewClock()
			k := jt.RSA(b, "")
			if alg == "ES256" {
				k = jt.EC(b, "")
			}
			k.KID = jt.K8sKID(b, k.Signer.Public())
			cfg := &k8ssa.Config{Issuer: issuer, Audience: aud, JWKSFile: jt.WriteFile(b, "jwks.json", jt.JWKS(k.JWK(false)))}
			p, err := k8ssa.New("k8s", cfg, k8ssa.Options{Now: clk.Now})
			if err != nil {
				b.Fatal(err)
			}
			tok := k.Sign(b, nil, podToken(clk.Now(), "prod", "web", "web-0"))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Attest(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
