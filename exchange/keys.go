package exchange

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// keySource verifies a parsed token's signature and returns its payload.
type keySource interface {
	verify(ctx context.Context, raw string, jws *jose.JSONWebSignature) ([]byte, error)
}

// StaticKeys are fixed public keys (a JWKS file, the CA's own token and
// JWT-SVID keys), chosen by kid.
type StaticKeys struct {
	keys []jose.JSONWebKey
}

// NewStaticKeys keeps the public signature keys of set (RSA of at least
// 2,048 bits, EC, Ed25519); an error when none is left.
func NewStaticKeys(set jose.JSONWebKeySet) (*StaticKeys, error) {
	s := &StaticKeys{}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" || !k.IsPublic() {
			continue
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < 2048 {
				continue
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		s.keys = append(s.keys, k)
	}
	if len(s.keys) == 0 {
		return nil, errors.New("no public signature key")
	}
	return s, nil
}

// PublicKeys wraps keys (kid: the RFC 7638 thumbprint given) as
// StaticKeys.
func PublicKeys(kids []string, keys []crypto.PublicKey) (*StaticKeys, error) {
	var set jose.JSONWebKeySet
	for i, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kids[i], Use: "sig"})
	}
	return NewStaticKeys(set)
}

// ReadJWKSFile reads a JWKS file as StaticKeys.
func ReadJWKSFile(path string) (*StaticKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS: %v", path, err)
	}
	s, err := NewStaticKeys(set)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return s, nil
}

func (s *StaticKeys) verify(_ context.Context, _ string, jws *jose.JSONWebSignature) ([]byte, error) {
	kid := jws.Signatures[0].Header.KeyID
	for i := range s.keys {
		k := &s.keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(k); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("the signature does not verify with any of the issuer's keys")
}

// remoteKeys are a JWKS URL's keys, cached and fetched again on an
// unknown kid (go-oidc's RemoteKeySet).
type remoteKeys struct{ set *oidc.RemoteKeySet }

func newRemoteKeys(hc *http.Client, url string) *remoteKeys {
	return &remoteKeys{set: oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), hc), url)}
}

func (r *remoteKeys) verify(ctx context.Context, raw string, _ *jose.JSONWebSignature) ([]byte, error) {
	return r.set.VerifySignature(ctx, raw)
}

// discoveredKeys find the issuer's jwks_uri by OIDC discovery at the
// first token (retried at most every discoveryRetry after a failure),
// then behave as remoteKeys.
type discoveredKeys struct {
	issuer string
	hc     *http.Client
	now    func() time.Time

	mu     sync.Mutex
	keys   *remoteKeys
	failed time.Time
	err    error
}

const discoveryRetry = 10 * time.Second

func (d *discoveredKeys) verify(ctx context.Context, raw string, jws *jose.JSONWebSignature) ([]byte, error) {
	d.mu.Lock()
	keys := d.keys
	if keys == nil {
		if !d.failed.IsZero() && d.now().Sub(d.failed) < discoveryRetry {
			err := d.err
			d.mu.Unlock()
			return nil, fmt.Errorf("%w: OIDC discovery of %s failed: %v", ErrUnavailable, d.issuer, err)
		}
		// One discovery at a time; the others wait for it.
		ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, d.hc), 10*time.Second)
		p, err := oidc.NewProvider(ctx, d.issuer)
		cancel()
		var md struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err == nil {
			err = p.Claims(&md)
		}
		if err == nil && !strings.HasPrefix(md.JWKSURI, "https://") {
			err = fmt.Errorf("jwks_uri %q is not https", md.JWKSURI)
		}
		if err != nil {
			d.failed, d.err = d.now(), err
			d.mu.Unlock()
			return nil, fmt.Errorf("%w: OIDC discovery of %s: %v", ErrUnavailable, d.issuer, err)
		}
		d.keys = newRemoteKeys(d.hc, md.JWKSURI)
		keys = d.keys
	}
	d.mu.Unlock()
	return keys.verify(ctx, raw, jws)
}
