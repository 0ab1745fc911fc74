package exchange_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/exchange"
	"github.com/go-jose/go-jose/v4"
)

// idpServer serves OIDC discovery and a JWKS with the keys it holds.
type idpServer struct {
	ts        *httptest.Server
	mu        sync.Mutex
	keys      map[string]*ecdsa.PrivateKey
	fetches   atomic.Int32
	discovers atomic.Int32
}

func newIdPServer(t *testing.T) *idpServer {
	s := &idpServer{keys: map[string]*ecdsa.PrivateKey{}}
	s.ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			s.discovers.Add(1)
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": s.ts.URL, "jwks_uri": s.ts.URL + "/keys"})
		case "/keys":
			s.fetches.Add(1)
			s.mu.Lock()
			var set jose.JSONWebKeySet
			for kid, k := range s.keys {
				set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Use: "sig", Algorithm: "ES256"})
			}
			s.mu.Unlock()
			_ = json.NewEncoder(w).Encode(set)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.ts.Close)
	return s
}

func (s *idpServer) addKey(kid string) *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s.mu.Lock()
	s.keys[kid] = k
	s.mu.Unlock()
	return k
}

// TestRemoteKeys: discovery once; the JWKS fetched at the first token,
// again for a new kid only after 10 s however many tokens name unknown
// kids; a fetch failure before any key is a 503-type error.
func TestRemoteKeys(t *testing.T) {
	srv := newIdPServer(t)
	k1 := srv.addKey("k1")
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	own, _ := exchange.PublicKeys([]string{"ca"}, []crypto.PublicKey{&k1.PublicKey})
	v, err := exchange.New(exchange.Config{TokenIssuer: caIss, TokenKeys: own, HTTPClient: srv.ts.Client(), Now: now,
		Issuers: []exchange.Issuer{{Issuer: srv.ts.URL, Audience: "agentca", Algorithms: []string{"ES256"}}}})
	if err != nil {
		t.Fatal(err)
	}
	claims := func() map[string]any {
		n := now()
		return map[string]any{"iss": srv.ts.URL, "sub": "alice", "aud": "agentca", "iat": n.Unix(), "exp": n.Add(time.Minute).Unix()}
	}
	ctx := context.Background()
	for range 3 {
		if _, err := v.Validate(ctx, sign(t, k1, "k1", "JWT", claims()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if srv.discovers.Load() != 1 || srv.fetches.Load() != 1 {
		t.Fatalf("%d discoveries, %d fetches for 3 tokens", srv.discovers.Load(), srv.fetches.Load())
	}
	// Made-up kids: one fetch per 10 s at most.
	bogus, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for range 20 {
		if _, err := v.Validate(ctx, sign(t, bogus, "nope", "JWT", claims()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil); err == nil {
			t.Fatal("a token of an unknown key was accepted")
		}
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after 20 tokens with an unknown kid within 10 s of the last, want 1", n)
	}
	// A rotation: the new key is fetched once the 10 s have passed.
	k2 := srv.addKey("k2")
	if _, err := v.Validate(ctx, sign(t, k2, "k2", "JWT", claims()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil); err == nil {
		t.Fatal("accepted within the 10 s (no fetch should have happened)")
	}
	clock.Add(int64(11 * time.Second))
	if _, err := v.Validate(ctx, sign(t, k2, "k2", "JWT", claims()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	for range 5 {
		_, _ = v.Validate(ctx, sign(t, bogus, "nope", "JWT", claims()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the first, the rotation)", n)
	}

	// An issuer whose discovery fails: unavailable, not a refusal.
	srv2 := newIdPServer(t)
	v2, err := exchange.New(exchange.Config{TokenIssuer: caIss, TokenKeys: own, HTTPClient: http.DefaultClient, Now: now,
		Issuers: []exchange.Issuer{{Issuer: srv2.ts.URL, Audience: "agentca", Algorithms: []string{"ES256"}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := claims()
	c["iss"] = srv2.ts.URL
	if _, err := v2.Validate(ctx, sign(t, k1, "k1", "JWT", c), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, nil); !errors.Is(err, exchange.ErrUnavailable) {
		t.Fatalf("discovery over untrusted TLS: %v, want ErrUnavailable", err)
	}
}
