package test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/verify"
	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

const jwtAudience = "https://svc.example.org"

// jwtBundle reads the JWT-SVID keys of the CA's /v1/bundle with go-spiffe,
// and returns the raw key objects too.
func jwtBundle(t *testing.T, c *testCA) (*jwtbundle.Bundle, []map[string]any) {
	t.Helper()
	r := do(t, c.client(nil), http.MethodGet, c.URL+"/v1/bundle", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/v1/bundle: %d %s", r.status, r.body)
	}
	td := spiffeid.RequireTrustDomainFromString(c.TrustDomain)
	b, err := spiffebundle.Parse(td, r.body)
	if err != nil {
		t.Fatalf("go-spiffe cannot parse /v1/bundle: %v\n%s", err, r.body)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	var jwtKeys []map[string]any
	for _, k := range raw.Keys {
		if k["use"] == "jwt-svid" {
			jwtKeys = append(jwtKeys, k)
		}
	}
	return jwtbundle.FromJWTAuthorities(td, b.JWTAuthorities()), jwtKeys
}

// fetchJWT runs agentca jwt-svid with the credentials in dir.
func fetchJWT(t *testing.T, c *testCA, dir string, extra ...string) string {
	t.Helper()
	r := mustRun(t, append([]string{"jwt-svid", "--ca", c.URL, "--out", dir, "--audience", jwtAudience}, extra...)...)
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("jwt-svid printed no JWT:\n%s", r)
	}
	return tok
}

// TestJWTSVID: a JWT-SVID fetched with the CLI is accepted by go-spiffe
// (bundle from /v1/bundle) and by go-oidc (discovery over HTTPS) for its
// audience and refused for another; the policy, a missing client
// certificate and a revoked one refuse issuance.
func TestJWTSVID(t *testing.T) {
	c := newCA(t, caOptions{})
	c.editConfig(func(cfg map[string]any) {
		cfg["jwt_svid"] = map[string]any{"default_ttl": "2m", "max_ttl": "10m"}
	})
	withPolicy(c, `{"rules": [{"name": "no-forbidden", "endpoints": ["jwt-svid"], "when": "'https://forbidden.example.org' in audience", "effect": "deny"}]}`)
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	tok := fetchJWT(t, c, dir, "--ttl", "90s")

	jb, keys := jwtBundle(t, c)
	if len(keys) != 1 || keys[0]["kid"] == "" || keys[0]["crv"] != "P-256" {
		t.Fatalf("want one P-256 jwt-svid key with a kid in the bundle, got %v", keys)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience})
	if err != nil {
		t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/agent/a" {
		t.Errorf("sub = %s", svid.ID)
	}
	if iat, ok := svid.Claims["iat"].(float64); !ok || svid.Expiry.Unix()-int64(iat) != 90 {
		t.Errorf("want exp - iat = 90s (--ttl 90s), got exp %s, iat %v", svid.Expiry, svid.Claims["iat"])
	}
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{"https://other.example.org"}); err == nil {
		t.Error("go-spiffe accepted the JWT-SVID for another audience")
	}

	// go-oidc discovers the issuer over HTTPS (the CA's root trusted) and
	// verifies the token against jwks_uri.
	ctx := oidc.ClientContext(context.Background(), c.client(nil))
	provider, err := oidc.NewProvider(ctx, c.URL)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: jwtAudience}).Verify(ctx, tok)
	if err != nil {
		t.Fatalf("go-oidc refuses the JWT-SVID: %v", err)
	}
	if idt.Subject != "spiffe://example.org/agent/a" || idt.Issuer != c.URL {
		t.Errorf("go-oidc: sub %q iss %q", idt.Subject, idt.Issuer)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "https://other.example.org"}).Verify(ctx, tok); err == nil {
		t.Error("go-oidc accepted the JWT-SVID for another audience")
	}

	// The verify library: keys from BundleURL, audience, then Authorize.
	v, err := verify.New(verify.Options{TrustDomain: c.TrustDomain, Roots: c.Roots, BundleURL: c.URL + "/v1/bundle"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if got, err := v.ValidateJWTSVID(ctx, tok, jwtAudience); err != nil || got.ID.String() != "spiffe://example.org/agent/a" {
		t.Errorf("verify.ValidateJWTSVID: %v %v", got, err)
	}
	if _, err := v.ValidateJWTSVID(ctx, tok, "https://other.example.org"); err == nil {
		t.Error("verify accepted the JWT-SVID for another audience")
	}
	only := spiffeid.RequireFromString("spiffe://example.org/agent/b")
	vb, err := verify.New(verify.Options{TrustDomain: c.TrustDomain, Roots: c.Roots, BundleURL: c.URL + "/v1/bundle",
		Authorize: tlsconfig.AuthorizeID(only)})
	if err != nil {
		t.Fatal(err)
	}
	defer vb.Close()
	if _, err := vb.ValidateJWTSVID(ctx, tok, jwtAudience); err == nil {
		t.Error("verify accepted a subject its Authorize refuses")
	}

	// Refusals.
	wantError(t, postJSON(t, c.client(nil), c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{jwtAudience}}),
		http.StatusUnauthorized, "client_certificate_required")
	hc := c.client(readCreds(t, dir).tlsCert())
	wantError(t, postJSON(t, hc, c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{}}), http.StatusBadRequest, "bad_request")
	wantError(t, postJSON(t, hc, c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{jwtAudience}, "ttl": "11m"}), http.StatusBadRequest, "bad_ttl")
	wantError(t, postJSON(t, hc, c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{"https://forbidden.example.org"}}),
		http.StatusForbidden, "policy_denied")
	r := runCLI(t, "jwt-svid", "--ca", c.URL, "--out", dir, "--audience", "https://forbidden.example.org")
	if r.code != 1 || !strings.Contains(r.stderr, "policy_denied") {
		t.Errorf("jwt-svid refused by the policy: want exit 1 naming policy_denied:\n%s", r)
	}
	oneLine(t, r)
	mustRun(t, "revoke", "--dir", c.Dir, "--serial", readCreds(t, dir).leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	wantError(t, postJSON(t, hc, c.URL+"/v1/jwt-svid", map[string]any{"audience": []string{jwtAudience}}), http.StatusForbidden, "certificate_revoked")
	// The revocation does not reach a JWT-SVID already issued: it stays
	// valid until its exp (docs/jwt-svid.md).
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience}); err != nil {
		t.Errorf("the JWT-SVID issued before the revocation: %v", err)
	}
	if log := c.proc.log(); !strings.Contains(log, "op=jwt-svid") || !strings.Contains(log, "outcome=issued") {
		t.Errorf("no jwt-svid audit line in the log")
	}
}

// TestJWTSVIDKeyRotation: the JWT key follows the anchors: a staged
// anchor's key is published before it signs, activation switches the
// signer, retire waits for the old key's last token, and after retirement
// a token the old key signed is refused.
func TestJWTSVIDKeyRotation(t *testing.T) {
	c := newCA(t, caOptions{})
	c.start()
	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	oldTok := fetchJWT(t, c, dir)
	_, keys := jwtBundle(t, c)
	if len(keys) != 1 {
		t.Fatalf("want one JWT key, got %v", keys)
	}
	oldKID := keys[0]["kid"]

	mustRun(t, "anchors", "stage", "--dir", c.Dir)
	_, keys = jwtBundle(t, c)
	if len(keys) != 2 {
		t.Fatalf("a staged anchor's JWT key is published at once: want 2 keys, got %v", keys)
	}
	if kid := headerKID(t, fetchJWT(t, c, dir)); kid != oldKID {
		t.Errorf("the staged key signs before activation: kid %v, want %v", kid, oldKID)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", c.Dir).stdout), &list); err != nil {
		t.Fatal(err)
	}
	var oldID, newID string
	for _, a := range list {
		switch a["state"] {
		case "active":
			oldID = a["id"].(string)
		case "staged":
			newID = a["id"].(string)
		}
	}
	// The agent learns the new root at its renewal, as agents do.
	mustRun(t, "renew", "--ca", c.URL, "--out", dir)
	if rr := do(t, c.client(nil), http.MethodGet, c.URL+"/v1/roots", "", nil); rr.status == http.StatusOK {
		c.Roots = parseCerts(t, rr.body)
	}
	mustRun(t, "anchors", "activate", "--dir", c.Dir, "--force", newID)
	newTok := fetchJWT(t, c, dir)
	if kid := headerKID(t, newTok); kid == oldKID {
		t.Fatal("after activation the old JWT key still signs")
	}
	jb, _ := jwtBundle(t, c)
	for _, tok := range []string{oldTok, newTok} {
		if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience}); err != nil {
			t.Errorf("while the old anchor retires, its and the new key's tokens verify: %v", err)
		}
	}
	r := runCLI(t, "anchors", "retire", "--dir", c.Dir, oldID)
	if r.code != 1 {
		t.Fatalf("retire while JWT-SVIDs of its key may be valid: want exit 1:\n%s", r)
	}
	mustRun(t, "anchors", "retire", "--dir", c.Dir, "--force", oldID)
	jb, keys = jwtBundle(t, c)
	if len(keys) != 1 || keys[0]["kid"] == oldKID {
		t.Fatalf("after retirement only the new key is published, got %v", keys)
	}
	if _, err := jwtsvid.ParseAndValidate(oldTok, jb, []string{jwtAudience}); err == nil {
		t.Error("a JWT-SVID signed by the retired key is still accepted")
	}
	if _, err := jwtsvid.ParseAndValidate(newTok, jb, []string{jwtAudience}); err != nil {
		t.Errorf("the new key's JWT-SVID: %v", err)
	}
	// jwks_uri follows too.
	r2 := do(t, c.client(nil), http.MethodGet, c.URL+"/v1/jwt-svid/keys", "", nil)
	if r2.status != http.StatusOK || strings.Contains(string(r2.body), oldKID.(string)) {
		t.Errorf("jwks_uri after retirement: %d %s", r2.status, r2.body)
	}
}

// headerKID is the kid of a compact JWS.
func headerKID(t *testing.T, tok string) any {
	t.Helper()
	h, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m["kid"]
}

// TestEtcdJWTSVID: two replicas on etcd sign with the same JWT key
// (init's keys/jwt.key, recorded once in the shared anchor set) and
// publish the same keys; a key staged through one is published by the
// other within seconds; after activation, a replica without the new key
// file answers 503 jwt_key_unavailable until the file is copied, then
// signs with it without a restart.
func TestEtcdJWTSVID(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	dir := filepath.Join(t.TempDir(), "a")
	if r := a.enroll(a.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	tokA, tokB := fetchJWT(t, a, dir), fetchJWT(t, b, dir)
	if headerKID(t, tokA) != headerKID(t, tokB) {
		t.Fatal("the replicas sign with different JWT keys")
	}
	bundleA, keysA := jwtBundle(t, a)
	bundleB, keysB := jwtBundle(t, b)
	if len(keysA) != 1 || len(keysB) != 1 || keysA[0]["kid"] != keysB[0]["kid"] {
		t.Fatalf("replicas publish different JWT keys: %v / %v", keysA, keysB)
	}
	if _, err := jwtsvid.ParseAndValidate(tokA, bundleB, []string{jwtAudience}); err != nil {
		t.Errorf("A's token with B's bundle: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(tokB, bundleA, []string{jwtAudience}); err != nil {
		t.Errorf("B's token with A's bundle: %v", err)
	}

	mustRun(t, "anchors", "stage", "--dir", a.Dir)
	eventually(t, 10*time.Second, 100*time.Millisecond, "B to publish the JWT key staged through A", func() bool {
		_, keys := jwtBundle(t, b)
		return len(keys) == 2
	})
	if rr := do(t, a.client(nil), http.MethodGet, a.URL+"/v1/roots", "", nil); rr.status == http.StatusOK {
		a.Roots = parseCerts(t, rr.body)
		b.Roots = a.Roots
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", a.Dir).stdout), &list); err != nil {
		t.Fatal(err)
	}
	newID := ""
	for _, an := range list {
		if an["state"] == "staged" {
			newID = an["id"].(string)
		}
	}
	mustRun(t, "anchors", "activate", "--dir", a.Dir, "--force", newID)
	hcB := b.client(readCreds(t, dir).tlsCert())
	eventually(t, 10*time.Second, 100*time.Millisecond, "B to refuse JWT-SVIDs without the new key", func() bool {
		r, err := tryDo(hcB, http.MethodPost, b.URL+"/v1/jwt-svid", "application/json", strings.NewReader(`{"audience":["`+jwtAudience+`"]}`))
		return err == nil && r.status == http.StatusServiceUnavailable && strings.Contains(string(r.body), "jwt_key_unavailable")
	})
	etcdCopyTree(t, filepath.Join(a.Dir, "keys", "anchors"), filepath.Join(b.Dir, "keys", "anchors"))
	var tok string
	eventually(t, 10*time.Second, 200*time.Millisecond, "B to sign with the new key once its file is there", func() bool {
		r, err := tryDo(hcB, http.MethodPost, b.URL+"/v1/jwt-svid", "application/json", strings.NewReader(`{"audience":["`+jwtAudience+`"]}`))
		if err != nil || r.status != http.StatusOK {
			return false
		}
		var resp struct{ Token string }
		if json.Unmarshal(r.body, &resp) != nil {
			return false
		}
		tok = resp.Token
		return true
	})
	if headerKID(t, tok) == keysA[0]["kid"] {
		t.Error("B still signs with the old key after the activation")
	}
	jb, _ := jwtBundle(t, a)
	if _, err := jwtsvid.ParseAndValidate(tok, jb, []string{jwtAudience}); err != nil {
		t.Errorf("B's new-key token with A's bundle: %v", err)
	}
}

// TestJWTSVIDCLIErrors: missing flags are usage errors (exit 2), missing
// credentials one stderr line with exit 1.
func TestJWTSVIDCLIErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"jwt-svid", "--out", dir, "--audience", "a"},
		{"jwt-svid", "--ca", "https://127.0.0.1:1", "--out", dir},
		{"jwt-svid", "--ca", "https://127.0.0.1:1", "--audience", "a"},
	} {
		r := runCLI(t, args...)
		if r.code != 2 {
			t.Errorf("want exit 2:\n%s", r)
		}
		oneLine(t, r)
	}
	r := runCLI(t, "jwt-svid", "--ca", "https://127.0.0.1:1", "--out", filepath.Join(dir, "none"), "--audience", "a")
	if r.code != 1 {
		t.Errorf("no credentials: want exit 1:\n%s", r)
	}
	oneLine(t, r)
}
