package jwtverify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/internal/jwtverify"
	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
)

const (
	testIss = "https://issuer.example"
	testAud = "agentca"
)

func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIss, "aud": []string{testAud}, "sub": "someone",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"jti":    "0b7e3f0c-2a43-4c3e-9e51-3d0c5c1f1a11",
		"nested": map[string]any{"name": "x", "n": 42, "f": 1.5, "empty": ""},
	}
}

func newVerifier(t *testing.T, clk *jt.Clock, keys *jwtverify.Keys) *jwtverify.Verifier {
	t.Helper()
	v, err := jwtverify.New(jwtverify.Config{Issuers: []string{testIss}, Audience: testAud,
		Algorithms: []string{"RS256", "ES256"}, MaxLifetime: time.Hour, Keys: keys, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func fileKeys(t *testing.T, clk *jt.Clock, keys ...*jt.Key) *jwtverify.Keys {
	t.Helper()
	var jwks []map[string]any
	for _, k := range keys {
		jwks = append(jwks, k.JWK(false))
	}
	ks, err := jwtverify.NewKeys(jwtverify.KeysConfig{File: jt.WriteFile(t, "jwks.json", jt.JWKS(jwks...)), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func TestVerify(t *testing.T) {
	clk := jt.NewClock()
	rk, ek, other := jt.RSA(t, "rsa-1"), jt.EC(t, "ec-1"), jt.RSA(t, "rsa-1")
	v := newVerifier(t, clk, fileKeys(t, clk, rk, ek))
	now := clk.Now()
	good := claimsAt(now)
	hs := jt.HS256(t, rk.PublicPEM(t), "rsa-1", good)
	// A JSON-serialised JWS carrying a valid compact signature.
	parts := strings.Split(rk.Sign(t, nil, good), ".")
	jsonJWS, _ := json.Marshal(map[string]string{"protected": parts[0], "payload": parts[1], "signature": parts[2]})
	ecAsRSA := jt.EC(t, "rsa-1")
	ecAsRSA.Alg = "ES256"

	tests := []struct {
		name  string
		token string
		want  string // substring of the refusal; "" means accepted
	}{
		{"rsa", rk.Sign(t, nil, good), ""},
		{"ec", ek.Sign(t, map[string]any{"typ": "JWT"}, good), ""},
		{"string aud", rk.Sign(t, nil, with(good, "aud", testAud)), ""},
		{"no nbf", rk.Sign(t, nil, with(good, "nbf", nil)), ""},
		{"skew tolerated", rk.Sign(t, nil, with(good, "iat", now.Add(59*time.Second).Unix(), "nbf", now.Add(59*time.Second).Unix())), ""},
		{"bad signature", jt.Tamper(t, rk.Sign(t, nil, good), with(good, "sub", "admin")), "bad signature"},
		{"other key same kid", other.Sign(t, nil, good), "bad signature"},
		{"unknown kid", jt.RSA(t, "rsa-2").Sign(t, nil, good), "unknown kid"},
		{"no kid", jt.Unsigned(map[string]any{"alg": "RS256"}, good) + "c2ln", "no kid"},
		{"alg none", jt.Unsigned(map[string]any{"alg": "none", "kid": "rsa-1"}, good), `algorithm "none" not allowed`},
		{"alg None", jt.Unsigned(map[string]any{"alg": "None", "kid": "rsa-1"}, good), "not allowed"},
		{"HS256 with the public key", hs, `algorithm "HS256" not allowed`},
		{"ES256 under an RSA kid", ecAsRSA.Sign(t, nil, good), "cannot verify ES256"},
		{"RS384 not allowed", func() string { k := *rk; k.Alg = "RS384"; return k.Sign(t, nil, good) }(), "not allowed"},
		{"expired", rk.Sign(t, nil, with(good, "iat", now.Add(-20*time.Minute).Unix(), "nbf", nil, "exp", now.Add(-61*time.Second).Unix())), "expired"},
		{"nbf in the future", rk.Sign(t, nil, with(good, "nbf", now.Add(2*time.Minute).Unix())), "not valid before"},
		{"iat in the future", rk.Sign(t, nil, with(good, "iat", now.Add(61*time.Second).Unix(), "nbf", nil)), "issued in the future"},
		{"wrong aud", rk.Sign(t, nil, with(good, "aud", []string{"other"})), "audience"},
		{"aud prefix", rk.Sign(t, nil, with(good, "aud", "agentca-x")), "audience"},
		{"no aud", rk.Sign(t, nil, with(good, "aud", nil)), "audience"},
		{"wrong iss", rk.Sign(t, nil, with(good, "iss", "https://issuer.example/")), "issuer"},
		{"no exp", rk.Sign(t, nil, with(good, "exp", nil)), "no exp"},
		{"no iat", rk.Sign(t, nil, with(good, "iat", nil)), "no iat"},
		{"exp before iat", rk.Sign(t, nil, with(good, "exp", now.Add(-time.Second).Unix(), "nbf", nil)), "not after iat"},
		{"lifetime too long", rk.Sign(t, nil, with(good, "exp", now.Add(2*time.Hour).Unix())), "lifetime"},
		{"exp out of range", rk.Sign(t, nil, with(good, "exp", 1e300)), "out of range"},
		{"aud not strings", rk.Sign(t, nil, with(good, "aud", []any{1})), "claims"},
		{"JSON serialisation", string(jsonJWS), "not a compact JWS"},
		{"whitespace", " " + rk.Sign(t, nil, good), "not a compact JWS"},
		{"two parts", "a.b", "not a compact JWS"},
		{"empty", "", "empty"},
		{"huge", strings.Repeat("a", jwtverify.MaxTokenSize+1), "exceeds"},
		{"garbage", "a.b.c", "jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := v.Verify(context.Background(), tc.token)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tok.Issuer != testIss || tok.ID == "" || tok.Expiry.IsZero() || tok.KeyID == "" {
					t.Fatalf("token = %+v", tok)
				}
				return
			}
			if !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestClaims(t *testing.T) {
	clk := jt.NewClock()
	k := jt.RSA(t, "k")
	v := newVerifier(t, clk, fileKeys(t, clk, k))
	tok, err := v.Verify(context.Background(), k.Sign(t, nil, claimsAt(clk.Now())))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := tok.Claims.String("nested", "name"); err != nil || s != "x" {
		t.Errorf("String = %q, %v", s, err)
	}
	if n, err := tok.Claims.Uint("nested", "n"); err != nil || n != "42" {
		t.Errorf("Uint = %q, %v", n, err)
	}
	for _, c := range []struct {
		path []string
		want string
	}{
		{[]string{"nested", "missing"}, "claim nested.missing: missing"},
		{[]string{"nested", "n"}, "claim nested.n: not a string"},
		{[]string{"nested", "empty"}, "claim nested.empty: empty"},
		{[]string{"sub", "x"}, "claim sub: not an object"},
	} {
		if _, err := tok.Claims.String(c.path...); err == nil || err.Error() != c.want {
			t.Errorf("String(%v) = %v, want %q", c.path, err, c.want)
		}
	}
	if _, err := tok.Claims.Uint("nested", "f"); err == nil {
		t.Error("Uint accepted 1.5")
	}
	if !tok.Claims.Has("nested", "name") || tok.Claims.Has("nested", "nope") {
		t.Error("Has")
	}
}

func TestVerifyClaimsOnly(t *testing.T) {
	clk := jt.NewClock()
	v := newVerifier(t, clk, nil)
	k := jt.RSA(t, "k")
	good := claimsAt(clk.Now())
	if _, err := v.VerifyClaimsOnly(jt.Tamper(t, k.Sign(t, nil, good), with(good, "sub", "x"))); err != nil {
		t.Fatalf("claims only: %v", err)
	}
	if _, err := v.VerifyClaimsOnly(jt.Unsigned(map[string]any{"alg": "none"}, good)); !errors.Is(err, provisioners.ErrUnauthorized) {
		t.Fatalf("alg none accepted: %v", err)
	}
	if _, err := v.VerifyClaimsOnly(k.Sign(t, nil, with(good, "aud", "x"))); !errors.Is(err, provisioners.ErrUnauthorized) {
		t.Fatalf("wrong aud accepted: %v", err)
	}
	if _, err := v.Verify(context.Background(), k.Sign(t, nil, good)); !errors.Is(err, provisioners.ErrUnauthorized) {
		t.Fatalf("Verify without keys: %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, c := range []jwtverify.Config{
		{Audience: "a", Algorithms: []string{"RS256"}},
		{Issuers: []string{""}, Audience: "a", Algorithms: []string{"RS256"}},
		{Issuers: []string{"i"}, Algorithms: []string{"RS256"}},
		{Issuers: []string{"i"}, Audience: "a"},
		{Issuers: []string{"i"}, Audience: "a", Algorithms: []string{"HS256"}},
		{Issuers: []string{"i"}, Audience: "a", Algorithms: []string{"none"}},
		{Issuers: []string{"i"}, Audience: "a", Algorithms: []string{"EdDSA"}},
	} {
		if _, err := jwtverify.New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// TestKeysReload: an unknown kid reloads the set at most once per
// MinRefresh; a key rotated in is found after the interval.
func TestKeysReload(t *testing.T) {
	clk := jt.NewClock()
	old, rotated := jt.RSA(t, "old"), jt.RSA(t, "new")
	srv := jt.NewServer(t, jt.JWKS(old.JWK(false)))
	keys, err := jwtverify.NewKeys(jwtverify.KeysConfig{URL: srv.JWKSURL(), HTTPClient: srv.Client(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, clk, keys)
	ctx := context.Background()
	if n := srv.JWKSFetches.Load(); n != 0 {
		t.Fatalf("%d fetches before the first token", n)
	}
	if _, err := v.Verify(ctx, old.Sign(t, nil, claimsAt(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, old.Sign(t, nil, claimsAt(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	if n := srv.JWKSFetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (cached)", n)
	}
	// Unknown kid, concurrently, within the interval: no more fetches.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := v.Verify(ctx, rotated.Sign(t, nil, claimsAt(clk.Now())))
			if !errors.Is(err, provisioners.ErrUnauthorized) || !strings.Contains(err.Error(), "unknown kid") {
				t.Errorf("err = %v", err)
			}
		})
	}
	wg.Wait()
	if n := srv.JWKSFetches.Load(); n != 1 {
		t.Fatalf("fetches = %d within the interval, want 1", n)
	}
	// After the interval, one fetch, and the rotated key is served.
	srv.SetJWKS(jt.JWKS(old.JWK(false), rotated.JWK(false)))
	clk.Advance(jwtverify.DefaultMinRefresh)
	for range 5 {
		if _, err := v.Verify(ctx, rotated.Sign(t, nil, claimsAt(clk.Now()))); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.JWKSFetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
	// A kid that does not exist at all: one fetch per interval.
	stranger := jt.RSA(t, "stranger")
	for range 3 {
		clk.Advance(jwtverify.DefaultMinRefresh / 2)
		v.Verify(ctx, stranger.Sign(t, nil, claimsAt(clk.Now())))
	}
	if n := srv.JWKSFetches.Load(); n != 3 {
		t.Fatalf("fetches = %d, want 3", n)
	}
	// Old keys are reloaded after MaxAge; a failing source keeps them.
	srv.SetJWKS([]byte("not json"))
	clk.Advance(jwtverify.DefaultMaxAge)
	if _, err := v.Verify(ctx, old.Sign(t, nil, claimsAt(clk.Now()))); err != nil {
		t.Fatalf("stale keys not kept on a failed reload: %v", err)
	}
	if n := srv.JWKSFetches.Load(); n != 4 {
		t.Fatalf("fetches = %d, want 4", n)
	}
}

func TestKeysDiscovery(t *testing.T) {
	clk := jt.NewClock()
	k := jt.EC(t, "ec")
	srv := jt.NewServer(t, jt.JWKS(k.JWK(false)))
	newV := func(issuer string) *jwtverify.Verifier {
		keys, err := jwtverify.NewKeys(jwtverify.KeysConfig{Issuer: issuer, HTTPClient: srv.Client(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		v, err := jwtverify.New(jwtverify.Config{Issuers: []string{issuer}, Audience: testAud,
			Algorithms: []string{"ES256"}, Keys: keys, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := newV(srv.URL)
	if _, err := v.Verify(context.Background(), k.Sign(t, nil, with(claimsAt(clk.Now()), "iss", srv.URL))); err != nil {
		t.Fatal(err)
	}
	if d, j := srv.DiscoveryFetches.Load(), srv.JWKSFetches.Load(); d != 1 || j != 1 {
		t.Fatalf("discovery %d, jwks %d fetches", d, j)
	}
	// The document must name the issuer it was fetched for.
	srv.SetIssuer("https://evil.example")
	clk.Advance(time.Minute)
	v = newV(srv.URL)
	_, err := v.Verify(context.Background(), k.Sign(t, nil, with(claimsAt(clk.Now()), "iss", srv.URL)))
	if !errors.Is(err, provisioners.ErrUnauthorized) || !strings.Contains(err.Error(), "discovery document names issuer") {
		t.Fatalf("err = %v", err)
	}
}

func TestKeysSources(t *testing.T) {
	clk := jt.NewClock()
	k := jt.RSA(t, "k")
	small := map[string]any{"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}
	oct := map[string]any{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}
	enc := with(k.JWK(false), "use", "enc", "kid", "enc")
	unknown := map[string]any{"kty": "OKP2", "kid": "u"}
	priv := map[string]any{"kty": "EC", "kid": "p", "crv": "P-256", "x": "", "y": ""}
	for _, c := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"good with junk around", jt.JWKS(small, oct, enc, unknown, priv, k.JWK(false)), true},
		{"only junk", jt.JWKS(small, oct, enc, unknown), false},
		{"empty", jt.JWKS(), false},
		{"not json", []byte("{"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := jwtverify.NewKeys(jwtverify.KeysConfig{File: jt.WriteFile(t, "jwks", c.body), Now: clk.Now})
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if _, err := jwtverify.NewKeys(jwtverify.KeysConfig{File: "/nonexistent/jwks.json"}); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := jwtverify.NewKeys(jwtverify.KeysConfig{}); err == nil {
		t.Error("no source accepted")
	}
	// Oversized and failing URLs refuse the token, never panic or hang.
	huge := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"keys":[`))
		w.Write([]byte(strings.Repeat(" ", jwtverify.MaxDocument)))
	}))
	defer huge.Close()
	for _, u := range []string{huge.URL, huge.URL + "/404"} {
		keys, err := jwtverify.NewKeys(jwtverify.KeysConfig{URL: u, HTTPClient: huge.Client(), Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		v := newVerifier(t, clk, keys)
		if _, err := v.Verify(context.Background(), k.Sign(t, nil, claimsAt(clk.Now()))); !errors.Is(err, provisioners.ErrUnauthorized) {
			t.Fatalf("err = %v", err)
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	type opts struct {
		Audience string   `json:"audience"`
		List     []string `json:"list,omitempty"`
	}
	for _, c := range []struct{ in, want string }{
		{`{"audience":"a","list":["x"]}`, ""},
		{``, ""},
		{`{}`, ""},
		{`{"audience":"a","extra":1}`, `"extra": unknown field`},
		{`{"Audience":"a"}`, `"Audience": unknown field`},
		{`{"audience":"a","audience":"b"}`, "audience: given twice"},
		{`{"audience":1}`, "audience: want string"},
		{`{"list":"x"}`, "list: want []string"},
		{`{"audience":"a"} {}`, "data after the object"},
		{`[]`, "want a JSON object"},
		{`null`, "want a JSON object"},
		{`{"audience":`, "options"},
	} {
		var o opts
		err := jwtverify.DecodeStrict(json.RawMessage(c.in), &o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.in, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestCheckHTTPSURL(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"https://example.com/keys", true},
		{"https://10.0.0.1:6443", true},
		{"http://example.com", false},
		{"https://", false},
		{"https://user:pw@example.com", false},
		{"https://example.com/#x", false},
		{"example.com", false},
		{"", false},
		{"https://exa mple.com", false},
	} {
		if err := jwtverify.CheckHTTPSURL(c.in); (err == nil) != c.ok {
			t.Errorf("%q: err = %v", c.in, err)
		}
	}
}

// TestKeysStaleDoNotWait: while one request reloads old keys from a slow
// source, the others verify with the keys they have instead of waiting.
func TestKeysStaleDoNotWait(t *testing.T) {
	clk := jt.NewClock()
	k := jt.RSA(t, "k")
	jwks := jt.JWKS(k.JWK(false))
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	var slow atomic.Bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			arrived <- struct{}{}
			<-release
		}
		w.Write(jwks)
	}))
	defer srv.Close()
	keys, err := jwtverify.NewKeys(jwtverify.KeysConfig{URL: srv.URL, HTTPClient: srv.Client(), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, clk, keys)
	ctx := context.Background()
	if _, err := v.Verify(ctx, k.Sign(t, nil, claimsAt(clk.Now()))); err != nil {
		t.Fatal(err)
	}
	slow.Store(true)
	clk.Advance(jwtverify.DefaultMaxAge)
	tok := k.Sign(t, nil, claimsAt(clk.Now()))
	first := make(chan error)
	go func() {
		_, err := v.Verify(ctx, tok)
		first <- err
	}()
	<-arrived // the first request holds the load, blocked on the source
	others := make(chan error, 1)
	go func() {
		for range 10 {
			if _, err := v.Verify(ctx, tok); err != nil {
				others <- err
				return
			}
		}
		others <- nil
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("requests with a known key waited for the reload")
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}
