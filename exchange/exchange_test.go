package exchange_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/exchange"
	"github.com/go-jose/go-jose/v4"
)

const (
	idp     = "https://idp.example"
	caIss   = "https://ca.example:8443"
	svidIss = "https://ca.example:8443/jwt"
	agentA  = "spiffe://example.org/agent/a"
	agentB  = "spiffe://example.org/agent/b"
)

type fixture struct {
	v                *exchange.Validator
	idpKey, caKey    *ecdsa.PrivateKey
	svidKey, outside *ecdsa.PrivateKey
	svid             *exchange.StaticKeys
	now              time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{now: time.Now()}
	for _, k := range []**ecdsa.PrivateKey{&f.idpKey, &f.caKey, &f.svidKey, &f.outside} {
		*k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	dir := t.TempDir()
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.idpKey.PublicKey, KeyID: "idp", Use: "sig", Algorithm: "ES256"}}})
	if err := os.WriteFile(filepath.Join(dir, "jwks.json"), set, 0o600); err != nil {
		t.Fatal(err)
	}
	own, err := exchange.PublicKeys([]string{"ca"}, []crypto.PublicKey{&f.caKey.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if f.svid, err = exchange.PublicKeys([]string{"svid"}, []crypto.PublicKey{&f.svidKey.PublicKey}); err != nil {
		t.Fatal(err)
	}
	f.v, err = exchange.New(exchange.Config{TokenIssuer: caIss, TokenKeys: own, JWTSVIDIssuer: svidIss, Dir: dir,
		Issuers: []exchange.Issuer{{Issuer: idp, Audience: "agentca", JWKSFile: "jwks.json", Algorithms: []string{"ES256"}}},
		Now:     func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sign(t testing.TB, key *ecdsa.PrivateKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func (f *fixture) user(kv ...any) map[string]any {
	m := map[string]any{"iss": idp, "sub": "alice", "aud": []string{"agentca"}, "scope": "tools.read", "email": "alice@example.org",
		"iat": f.now.Unix(), "exp": f.now.Add(5 * time.Minute).Unix()}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	return m
}

func (f *fixture) caToken(kv ...any) map[string]any {
	m := map[string]any{"iss": caIss, "sub": "alice", "subject_issuer": idp, "aud": agentB, "client_id": agentA, "scope": "tools.read",
		"iat": f.now.Unix(), "exp": f.now.Add(time.Minute).Unix(), "jti": "j", "cnf": map[string]string{"x5t#S256": "abc"},
		"act": map[string]any{"sub": agentA}, "task": "t-1"}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	return m
}

func TestValidate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s, err := f.v.Validate(ctx, sign(t, f.idpKey, "idp", "JWT", f.user()), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, f.svid)
	if err != nil || s.Kind != exchange.KindUser || s.Subject != "alice" || s.Type != exchange.SubjectUser || s.Issuer != idp ||
		!s.HasScope || len(s.Scope) != 1 || s.Claims["email"] != "alice@example.org" || len(s.Actors) != 0 || s.Task != "" {
		t.Fatalf("user token: %+v %v", s, err)
	}
	s, err = f.v.Validate(ctx, sign(t, f.caKey, "ca", "at+jwt", f.caToken()), exchange.TypeAccessToken, exchange.Caller{SPIFFEID: agentB}, f.svid)
	if err != nil || s.Kind != exchange.KindAccessToken || s.Subject != "alice" || s.Type != exchange.SubjectUser ||
		exchange.Chain(s.Actors) != agentA || s.Task != "t-1" || s.Cnf != "abc" {
		t.Fatalf("CA token: %+v %v", s, err)
	}
	s, err = f.v.Validate(ctx, sign(t, f.svidKey, "svid", "JWT", map[string]any{"iss": svidIss, "sub": agentA, "aud": agentB,
		"iat": f.now.Unix(), "exp": f.now.Add(time.Minute).Unix()}), exchange.TypeJWT, exchange.Caller{SPIFFEID: agentB}, f.svid)
	if err != nil || s.Kind != exchange.KindJWTSVID || s.Subject != agentA || s.Type != exchange.SubjectWorkload || s.HasScope {
		t.Fatalf("JWT-SVID: %+v %v", s, err)
	}

	// A token addressed to the CA: only its own holder may exchange it.
	toCA := sign(t, f.caKey, "ca", "at+jwt", f.caToken("aud", caIss))
	if _, err := f.v.Validate(ctx, toCA, exchange.TypeAccessToken, exchange.Caller{SPIFFEID: agentA, Thumbprint: "abc"}, f.svid); err != nil {
		t.Fatalf("a CA-addressed token by its holder: %v", err)
	}
	svidToCA := sign(t, f.svidKey, "svid", "JWT", map[string]any{"iss": svidIss, "sub": agentA, "aud": caIss,
		"iat": f.now.Unix(), "exp": f.now.Add(time.Minute).Unix()})
	if _, err := f.v.Validate(ctx, svidToCA, exchange.TypeJWT, exchange.Caller{SPIFFEID: agentA}, f.svid); err != nil {
		t.Fatalf("a CA-addressed JWT-SVID by its subject: %v", err)
	}
	for _, tc := range []struct {
		name, token, typ, recipient, want string
	}{
		{"CA-addressed token, another holder", toCA, exchange.TypeAccessToken, agentB, "only by the agent it was issued to"},
		{"CA-addressed JWT-SVID, another agent", svidToCA, exchange.TypeJWT, agentB, "only by the agent it was issued to"},
		{"untrusted issuer", sign(t, f.outside, "idp", "JWT", f.user("iss", "https://other.example")), exchange.TypeJWT, agentA, "not trusted"},
		{"other key", sign(t, f.outside, "idp", "JWT", f.user()), exchange.TypeJWT, agentA, "signature"},
		{"expired", sign(t, f.idpKey, "idp", "JWT", f.user("exp", f.now.Add(-time.Minute).Unix())), exchange.TypeJWT, agentA, "expired"},
		{"no exp", sign(t, f.idpKey, "idp", "JWT", f.user("exp", nil)), exchange.TypeJWT, agentA, "no exp"},
		{"future iat", sign(t, f.idpKey, "idp", "JWT", f.user("iat", f.now.Add(time.Hour).Unix())), exchange.TypeJWT, agentA, "times"},
		{"smuggled act", sign(t, f.idpKey, "idp", "JWT", f.user("act", map[string]any{"sub": agentB})), exchange.TypeJWT, agentA, "act claim"},
		{"user aud", sign(t, f.idpKey, "idp", "JWT", f.user("aud", "other")), exchange.TypeJWT, agentA, "audience"},
		{"CA token for another agent", sign(t, f.caKey, "ca", "at+jwt", f.caToken()), exchange.TypeAccessToken, agentA, "audience"},
		{"CA token, IdP no longer trusted", sign(t, f.caKey, "ca", "at+jwt", f.caToken("subject_issuer", "https://gone.example")), exchange.TypeJWT, agentB, "no longer trusted"},
		{"CA token, bad act", sign(t, f.caKey, "ca", "at+jwt", f.caToken("act", map[string]any{"sub": "not-spiffe"})), exchange.TypeJWT, agentB, "SPIFFE"},
		{"CA token without cnf", sign(t, f.caKey, "ca", "at+jwt", f.caToken("cnf", nil)), exchange.TypeJWT, agentB, "cnf"},
		{"CA token signed by the IdP", sign(t, f.idpKey, "ca", "at+jwt", f.caToken()), exchange.TypeJWT, agentB, "signature"},
		{"JWT-SVID with act", sign(t, f.svidKey, "svid", "JWT", map[string]any{"iss": svidIss, "sub": agentA, "aud": agentB,
			"exp": f.now.Add(time.Minute).Unix(), "act": map[string]any{"sub": agentB}}), exchange.TypeJWT, agentB, "act"},
		{"id_token type for a CA token", sign(t, f.caKey, "ca", "at+jwt", f.caToken()), exchange.TypeIDToken, agentB, "id_token"},
		{"unknown type", sign(t, f.idpKey, "idp", "JWT", f.user()), "urn:x", agentA, "not supported"},
		{"alg none", "eyJhbGciOiJub25lIn0." + strings.TrimRight(jsonB64(f.user()), "=") + ".", exchange.TypeJWT, agentA, "algorithm"},
	} {
		_, err := f.v.Validate(ctx, tc.token, tc.typ, exchange.Caller{SPIFFEID: tc.recipient}, f.svid)
		var e *exchange.Error
		if !errors.As(err, &e) || !strings.Contains(e.Reason, tc.want) {
			t.Errorf("%s: %v, want a refusal containing %q", tc.name, err, tc.want)
		}
	}
}

func jsonB64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestParseAct(t *testing.T) {
	ids, err := exchange.ParseAct([]byte(`{"sub":"` + agentB + `","act":{"sub":"` + agentA + `"}}`))
	if err != nil || exchange.Chain(ids) != agentB+" <- "+agentA {
		t.Fatalf("%v %v", ids, err)
	}
	b, _ := json.Marshal(exchange.Nest([]string{agentB, agentA}))
	if string(b) != `{"sub":"`+agentB+`","act":{"sub":"`+agentA+`"}}` {
		t.Fatalf("Nest: %s", b)
	}
	deep := `{"sub":"` + agentA + `"}`
	for range exchange.MaxActDepth {
		deep = `{"sub":"` + agentA + `","act":` + deep + `}`
	}
	for name, raw := range map[string]string{"no sub": `{"act":{"sub":"` + agentA + `"}}`, "array": `[]`, "null act": `{"sub":"` + agentA + `","act":null}`,
		"extra member": `{"sub":"` + agentA + `","iss":"x"}`, "duplicate": `{"sub":"` + agentA + `","sub":"` + agentB + `"}`, "too deep": deep,
		"string": `"x"`} {
		if _, err := exchange.ParseAct([]byte(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzParseAct: never a panic; what is accepted is 1..MaxActDepth
// SPIFFE IDs that Nest renders back to an act claim ParseAct reads the
// same.
func FuzzParseAct(f *testing.F) {
	f.Add([]byte(`{"sub":"spiffe://example.org/a","act":{"sub":"spiffe://example.org/b"}}`))
	f.Add([]byte(`{"sub":"spiffe://example.org/a","act":"x"}`))
	f.Add([]byte(`{"sub":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids, err := exchange.ParseAct(raw)
		if err != nil {
			return
		}
		if len(ids) == 0 || len(ids) > exchange.MaxActDepth {
			t.Fatalf("accepted %d actors", len(ids))
		}
		b, _ := json.Marshal(exchange.Nest(ids))
		again, err := exchange.ParseAct(b)
		if err != nil || exchange.Chain(again) != exchange.Chain(ids) {
			t.Fatalf("round trip %v → %s → %v %v", ids, b, again, err)
		}
	})
}

// FuzzValidate: arbitrary subject tokens never panic and are never
// accepted (no fuzzer input is signed by the fixture's keys).
func FuzzValidate(f *testing.F) {
	fx := newFixture(f)
	f.Add(sign(f, fx.outside, "idp", "JWT", fx.user()))
	f.Add(sign(f, fx.outside, "ca", "at+jwt", fx.caToken()))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := fx.v.Validate(context.Background(), tok, exchange.TypeJWT, exchange.Caller{SPIFFEID: agentB}, fx.svid)
		if err == nil {
			t.Fatalf("accepted %q: %+v", tok, s)
		}
	})
}
