package gcpiit_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/gcpiit"
	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
)

const (
	aud     = "https://ca.example.org"
	project = "my-project-123"
	instID  = "4567890123456789012"
)

// identityToken is a format=full instance identity token's claims, as the
// metadata server returns them.
func identityToken(now time.Time, projectID string) map[string]any {
	return map[string]any{
		"aud":            aud,
		"azp":            "112233445566778899000",
		"email":          "123456789012-compute@developer.gserviceaccount.com",
		"email_verified": true,
		"exp":            now.Add(time.Hour).Unix(),
		"google": map[string]any{"compute_engine": map[string]any{
			"instance_creation_timestamp": 1709280000,
			"instance_id":                 instID,
			"instance_name":               "web-1",
			"project_id":                  projectID,
			"project_number":              123456789012,
			"zone":                        "europe-west1-b",
		}},
		"iat": now.Unix(),
		"iss": "https://accounts.google.com",
		"sub": "112233445566778899000",
	}
}

// set returns a copy of m with the dot-separated path set to v (nil
// deletes).
func set(m map[string]any, path string, v any) map[string]any {
	return jt.Set(m, v, strings.Split(path, ".")...)
}

func ce(field string) string { return "google.compute_engine." + field }

// googleKey is a key in Google's format: RS256, a 40-hex-digit kid,
// header {"alg","kid","typ":"JWT"}.
type googleKey struct{ *jt.Key }

func newGoogleKey(t testing.TB) googleKey {
	k := jt.RSA(t, "")
	k.KID = jt.GoogleKID(k.Signer.Public())
	return googleKey{k}
}

func (k googleKey) sign(t testing.TB, claims any) string {
	return k.Sign(t, map[string]any{"typ": "JWT"}, claims)
}

func refused(t *testing.T, id *provisioners.Identity, err error, want string) {
	t.Helper()
	if id != nil || !errors.Is(err, provisioners.ErrUnauthorized) {
		t.Fatalf("Attest = %+v, %v; want ErrUnauthorized", id, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v; want it to say %q", err, want)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"minimal", `{"audience":"https://ca","projects":["my-project-123"]}`, ""},
		{"legacy domain project", `{"audience":"a","projects":["example.com:my-project"],"jwks_file":"/f"}`, ""},
		{"jwks url", `{"audience":"a","projects":["my-project-123"],"jwks_url":"https://keys.example/certs"}`, ""},
		{"unknown field", `{"audience":"a","projects":["my-project-123"],"project":"x"}`, `"project": unknown field`},
		{"missing audience", `{"projects":["my-project-123"]}`, "audience: required"},
		{"missing projects", `{"audience":"a"}`, "projects: required"},
		{"empty projects", `{"audience":"a","projects":[]}`, "projects: required"},
		{"bad project", `{"audience":"a","projects":["My_Project"]}`, "projects[0]:"},
		{"short project", `{"audience":"a","projects":["abc"]}`, "projects[0]:"},
		{"both jwks", `{"audience":"a","projects":["my-project-123"],"jwks_file":"/f","jwks_url":"https://k"}`, "jwks_file: give jwks_file or jwks_url, not both"},
		{"http jwks", `{"audience":"a","projects":["my-project-123"],"jwks_url":"http://k"}`, "jwks_url: must be an https URL"},
		{"bad url", `{"audience":"a","projects":["my-project-123"],"jwks_url":"https://%zz"}`, "jwks_url: not a URL"},
		{"wrong type", `{"audience":["a"],"projects":["my-project-123"]}`, "audience: want string"},
		{"trailing", `{"audience":"a","projects":["my-project-123"]}x`, "options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gcpiit.ParseConfig(json.RawMessage(tt.in))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "gcpiit: ")):
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	cfg := &gcpiit.Config{Audience: aud, Projects: []string{project}}
	if _, err := gcpiit.New("g", cfg, gcpiit.Options{SingleUse: true}); err == nil || !strings.Contains(err.Error(), "single_use") {
		t.Errorf("single_use accepted: %v", err)
	}
	if _, err := gcpiit.New("g", &gcpiit.Config{Audience: aud, Projects: []string{project}, JWKSFile: "/nonexistent"}, gcpiit.Options{}); err == nil {
		t.Error("missing jwks_file accepted")
	}
	if _, err := gcpiit.New("", cfg, gcpiit.Options{}); err == nil {
		t.Error("no name accepted")
	}
	// The default key source is Google's; nothing is fetched before the
	// first token.
	if _, err := gcpiit.New("g", cfg, gcpiit.Options{}); err != nil {
		t.Error(err)
	}
}

func TestAttest(t *testing.T) {
	clk := jt.NewClock()
	gk := newGoogleKey(t)
	srv := jt.NewServer(t, jt.JWKS(gk.JWK(false)))
	cfg, err := gcpiit.ParseConfig(json.RawMessage(`{"audience":"` + aud + `","projects":["` + project + `","other-project"],"jwks_url":"` + srv.JWKSURL() + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := gcpiit.New("gcp", cfg, gcpiit.Options{Now: clk.Now, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	good := identityToken(now, project)
	ctx := context.Background()

	id, err := p.Attest(ctx, gk.sign(t, good))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"project_id": project, "project_number": "123456789012", "zone": "europe-west1-b", "region": "europe-west1",
		"instance_id": instID, "instance_name": "web-1", "instance_creation_timestamp": "1709280000",
		"service_account_email": "123456789012-compute@developer.gserviceaccount.com", "service_account_id": "112233445566778899000"}
	if len(id.Claims) != len(want) {
		t.Errorf("claims = %v", id.Claims)
	}
	for k, v := range want {
		if id.Claims[k] != v {
			t.Errorf("claim %s = %q, want %q", k, id.Claims[k], v)
		}
	}
	// Trust on first use: the instance's replay key, which the store
	// refuses the second time.
	if w := "gcp-iit:gcp:" + project + ":" + instID; len(id.Once) != 1 || id.Once[0] != w || id.SPIFFEID != "" {
		t.Fatalf("identity = %+v, want Once [%q]", id, w)
	}
	if got := jt.Issue(t, gcpiit.DefaultTemplate, id); got != "spiffe://example.org/gcp/my-project-123/europe-west1-b/"+instID {
		t.Errorf("default template gave %s", got)
	}
	if _, err := p.Attest(ctx, gk.sign(t, set(good, "iss", "accounts.google.com"))); err != nil {
		t.Errorf("iss accounts.google.com: %v", err)
	}
	if _, err := p.Attest(ctx, gk.sign(t, set(good, "email", nil))); err != nil {
		t.Errorf("no email: %v", err)
	}

	rotated := newGoogleKey(t)
	tests := []struct{ name, token, want string }{
		{"bad signature", jt.Tamper(t, gk.sign(t, good), set(good, ce("project_id"), "other-project")), "bad signature"},
		{"unknown kid", rotated.sign(t, good), "unknown kid"},
		{"alg none", jt.Unsigned(map[string]any{"alg": "none", "kid": gk.KID, "typ": "JWT"}, good), `"none" not allowed`},
		{"HS256 keyed with the public key", jt.HS256(t, gk.PublicPEM(t), gk.KID, good), `"HS256" not allowed`},
		{"ES256", func() string { k := jt.EC(t, gk.KID); return k.Sign(t, nil, good) }(), `"ES256" not allowed`},
		{"expired", gk.sign(t, set(set(good, "iat", now.Add(-2*time.Hour).Unix()), "exp", now.Add(-time.Hour).Unix())), "expired"},
		{"nbf in the future", gk.sign(t, set(good, "nbf", now.Add(5*time.Minute).Unix())), "not valid before"},
		{"iat in the future", gk.sign(t, set(set(good, "iat", now.Add(2*time.Minute).Unix()), "exp", now.Add(time.Hour).Unix())), "issued in the future"},
		{"lifetime over an hour", gk.sign(t, set(good, "exp", now.Add(2*time.Hour).Unix())), "lifetime"},
		{"wrong aud", gk.sign(t, set(good, "aud", "https://other.example")), "audience"},
		{"wrong iss", gk.sign(t, set(good, "iss", "https://securetoken.google.com/my-project-123")), "issuer"},
		{"project not allowed", gk.sign(t, identityToken(now, "attacker-project")), `project "attacker-project" not allowed`},
		{"format=standard (no google claim)", gk.sign(t, set(good, "google", nil)), "claim google: missing"},
		{"no project_id", gk.sign(t, set(good, ce("project_id"), nil)), "compute_engine.project_id: missing"},
		{"no project_number", gk.sign(t, set(good, ce("project_number"), nil)), "project_number: missing"},
		{"no zone", gk.sign(t, set(good, ce("zone"), nil)), "zone: missing"},
		{"no instance_id", gk.sign(t, set(good, ce("instance_id"), nil)), "instance_id: missing"},
		{"no instance_name", gk.sign(t, set(good, ce("instance_name"), nil)), "instance_name: missing"},
		{"no creation timestamp", gk.sign(t, set(good, ce("instance_creation_timestamp"), nil)), "instance_creation_timestamp: missing"},
		{"instance_id a number", gk.sign(t, set(good, ce("instance_id"), 4567890123456789012)), "instance_id: not a string"},
		{"project_number a string", gk.sign(t, set(good, ce("project_number"), "123")), "project_number: not a non-negative integer"},
		{"zone a path", gk.sign(t, set(good, ce("zone"), "projects/123/zones/europe-west1-b")), "zone"},
		{"instance_id not digits", gk.sign(t, set(good, ce("instance_id"), "../x")), "instance_id"},
		{"no sub", gk.sign(t, set(good, "sub", nil)), "no sub"},
		{"email not a string", gk.sign(t, set(good, "email", true)), "email: not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.Attest(ctx, tt.token)
			refused(t, id, err, tt.want)
		})
	}
	if n := srv.JWKSFetches.Load(); n != 1 {
		t.Errorf("JWKS fetches = %d; the unknown kid may reload once per 10 s only", n)
	}
	srv.SetJWKS(jt.JWKS(gk.JWK(false), rotated.JWK(false)))
	clk.Advance(10 * time.Second)
	if _, err := p.Attest(ctx, rotated.sign(t, identityToken(clk.Now(), project))); err != nil {
		t.Fatal(err)
	}
	if n := srv.JWKSFetches.Load(); n != 2 {
		t.Errorf("JWKS fetches = %d, want 2", n)
	}
}

// FuzzGCPAttest: no token string panics Attest, every refusal is
// ErrUnauthorized, and a token is accepted only if it verifies with the
// Google key.
func FuzzGCPAttest(f *testing.F) {
	clk := jt.NewClock()
	gk := newGoogleKey(f)
	cfg := &gcpiit.Config{Audience: aud, Projects: []string{project}, JWKSFile: jt.WriteFile(f, "jwks.json", jt.JWKS(gk.JWK(false)))}
	p, err := gcpiit.New("gcp", cfg, gcpiit.Options{Now: clk.Now})
	if err != nil {
		f.Fatal(err)
	}
	good := identityToken(clk.Now(), project)
	f.Add(gk.sign(f, good))
	f.Add(gk.sign(f, set(good, ce("zone"), 3)))
	f.Add(jt.HS256(f, gk.PublicPEM(f), gk.KID, good))
	f.Add(jt.Unsigned(map[string]any{"alg": "none", "kid": gk.KID}, good))
	pub := gk.Signer.Public()
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
			t.Fatalf("accepted a token Google's key does not verify: %q", token)
		}
		if id.Claims["project_id"] != project || len(id.Once) != 1 {
			t.Fatalf("identity = %+v", id)
		}
	})
}
