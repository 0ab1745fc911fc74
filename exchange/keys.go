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
	"io"
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

// remoteKeys are a JWKS URL's keys, fetched at the first token, again
// when older than remoteMaxAge, and on an unknown kid at most every
// remoteMinRefetch (so a client presenting made-up kids cannot make the
// CA fetch the provider's keys once per request). A failed fetch keeps
// the keys held.
type remoteKeys struct {
	url string
	hc  *http.Client
	now func() time.Time

	fetch   sync.Mutex // one fetch at a time
	mu      sync.Mutex
	keys    *StaticKeys
	fetched time.Time // last successful fetch
	tried   time.Time // last attempt
}

const (
	remoteMinRefetch = 10 * time.Second
	remoteMaxAge     = time.Hour
	maxJWKS          = 1 << 20
)

func newRemoteKeys(hc *http.Client, url string, now func() time.Time) *remoteKeys {
	return &remoteKeys{url: url, hc: hc, now: now}
}

func (r *remoteKeys) verify(ctx context.Context, raw string, jws *jose.JSONWebSignature) ([]byte, error) {
	kid := jws.Signatures[0].Header.KeyID
	r.mu.Lock()
	keys, fresh := r.keys, r.now().Sub(r.fetched) < remoteMaxAge
	r.mu.Unlock()
	if keys != nil && fresh && (kid == "" || keys.has(kid)) {
		return keys.verify(ctx, raw, jws)
	}
	keys, err := r.refresh(ctx)
	if keys == nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, r.url, err)
	}
	return keys.verify(ctx, raw, jws)
}

// refresh fetches the keys unless the last attempt was less than
// remoteMinRefetch ago; it returns the keys held.
func (r *remoteKeys) refresh(ctx context.Context) (*StaticKeys, error) {
	r.fetch.Lock()
	defer r.fetch.Unlock()
	r.mu.Lock()
	if r.now().Sub(r.tried) < remoteMinRefetch {
		keys := r.keys
		r.mu.Unlock()
		return keys, errors.New("fetched less than 10 s ago")
	}
	r.tried = r.now()
	r.mu.Unlock()
	keys, err := fetchJWKS(context.WithoutCancel(ctx), r.hc, r.url)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		return r.keys, err
	}
	r.keys, r.fetched = keys, r.now()
	return keys, nil
}

// fetchJWKS GETs a JWKS (at most 1 MiB, 10 s).
func fetchJWKS(ctx context.Context, hc *http.Client, url string) (*StaticKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS))
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS: %v", url, err)
	}
	return NewStaticKeys(set)
}

func (s *StaticKeys) has(kid string) bool {
	for i := range s.keys {
		if s.keys[i].KeyID == kid {
			return true
		}
	}
	return false
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
		ctx, cancel := context.WithTimeout(oidc.ClientContext(context.WithoutCancel(ctx), d.hc), 10*time.Second)
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
		d.keys = newRemoteKeys(d.hc, md.JWKSURI, d.now)
		keys = d.keys
	}
	d.mu.Unlock()
	return keys.verify(ctx, raw, jws)
}
