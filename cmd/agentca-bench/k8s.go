package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"go.step.sm/crypto/jose"
)

// The k8s-sa provisioner the k8s-sign phase enrolls through, configured
// in agentca.json before `agentca serve` starts.
const (
	k8sProvisioner = "k8s"
	k8sIssuer      = "https://kubernetes.default.svc"
	k8sAudience    = "agentca"
	k8sNamespace   = "bench"
	k8sSA          = "bench-agent"
	// k8sTokenLife is the projected volume's expirationSeconds in
	// deploy/kubernetes (600 s).
	k8sTokenLife = 600 * time.Second
)

// k8sCluster is a stand-in for a cluster's service-account issuer: an
// RSA-2048 signing key, published as a JWKS file.
type k8sCluster struct {
	key      *rsa.PrivateKey
	kid      string
	jwksPath string
}

func newK8sCluster(tmp string) (*k8sCluster, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	// Kubernetes names its keys base64url(SHA-256(PKIX DER of the public
	// key)).
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	k := &k8sCluster{key: key, kid: base64.RawURLEncoding.EncodeToString(sum[:]), jwksPath: filepath.Join(tmp, "k8s-jwks.json")}
	// What `kubectl get --raw /openid/v1/jwks` prints.
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: k.kid, Algorithm: jose.RS256, Use: "sig"}}}
	b, err := json.Marshal(jwks)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.jwksPath, b, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// addProvisioner appends the k8s-sa provisioner to agentca.json's list.
func (k *k8sCluster) addProvisioner(c map[string]any) {
	provs, _ := c["provisioners"].([]any)
	c["provisioners"] = append(provs, map[string]any{
		"type": "k8s-sa", "name": k8sProvisioner, "issuer": k8sIssuer, "audience": k8sAudience,
		"jwks_file": k.jwksPath, "namespaces": []string{k8sNamespace},
	})
}

// uuid4 is a random RFC 4122 version-4 UUID, as Kubernetes makes UIDs.
func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// tokens signs n projected service-account tokens, each for its own pod,
// on every core. The claims are those the API server writes for a pod's
// projected volume (Kubernetes 1.30+, with the node and jti), marshalled
// by encoding/json as Kubernetes does; the header is {"alg":"RS256",
// "kid":…}; the JWS is made by go.step.sm/crypto/jose.
func (k *k8sCluster) tokens(ctx context.Context, n int) ([]string, error) {
	out := make([]string, n)
	now := time.Now()
	saUID := uuid4()
	run := uuid4()[:8]
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.key, KeyID: k.kid}}, nil)
			if err != nil {
				errs[w] = err
				return
			}
			for i := w; i < n && ctx.Err() == nil; i += workers {
				claims := map[string]any{
					"aud": []string{k8sAudience},
					"exp": now.Add(k8sTokenLife).Unix(),
					"iat": now.Unix(),
					"iss": k8sIssuer,
					"jti": uuid4(),
					"kubernetes.io": map[string]any{
						"namespace":      k8sNamespace,
						"node":           map[string]any{"name": fmt.Sprintf("node-%d", i%8), "uid": uuid4()},
						"pod":            map[string]any{"name": fmt.Sprintf("bench-agent-%s-%06d", run, i), "uid": uuid4()},
						"serviceaccount": map[string]any{"name": k8sSA, "uid": saUID},
					},
					"nbf": now.Unix(),
					"sub": "system:serviceaccount:" + k8sNamespace + ":" + k8sSA,
				}
				payload, err := json.Marshal(claims)
				if err != nil {
					errs[w] = err
					return
				}
				jws, err := sig.Sign(payload)
				if err != nil {
					errs[w] = err
					return
				}
				if out[i], err = jws.CompactSerialize(); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("signing k8s tokens: %w", err)
		}
	}
	return out, ctx.Err()
}
