package azuremsi_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/azuremsi"
	jt "github.com/agentca/agentca/provisioners/internal/jwtverify/jwtverifytest"
)

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	sub      = "9b1a2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
	otherSub = "00000000-1111-4222-8333-444444444444"
	aud      = "api://agentca"
	oid      = "6c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
	appid    = "bdb6a5a2-3c4d-4e5f-8a6b-7c8d9e0f1a2b"
	uti      = "ZJ9sPqXr2UaM3xQ1bC4dAA"
	vmMirid  = "/subscriptions/" + sub + "/resourcegroups/Web-RG/providers/Microsoft.Compute/virtualMachines/Web-1"
)

// msiToken is a v1.0 managed-identity access token's claims, as IMDS
// returns them.
func msiToken(now time.Time, mirid string) map[string]any {
	return map[string]any{
		"aud":       aud,
		"iss":       "https://sts.windows.net/" + tenant + "/",
		"iat":       now.Add(-5 * time.Minute).Unix(),
		"nbf":       now.Add(-5 * time.Minute).Unix(),
		"exp":       now.Add(24 * time.Hour).Unix(),
		"aio":       "E2NgYJj8mPfW7f3u5rk3+cP3mZ8FAA==",
		"appid":     appid,
		"appidacr":  "2",
		"idp":       "https://sts.windows.net/" + tenant + "/",
		"idtyp":     "app",
		"oid":       oid,
		"rh":        "0.AXEAv4j5cvGGr0GRqy180BHbR6Kltr1NPF5OimtyjZ4PGisAAA.",
		"sub":       oid,
		"tid":       tenant,
		"uti":       uti,
		"ver":       "1.0",
		"xms_mirid": mirid,
		"xms_tcdt":  1289241547,
	}
}

// v2 turns a v1.0 token into the v2.0 form.
func v2(m map[string]any) map[string]any {
	m = jt.Set(m, "https://login.microsoftonline.com/"+tenant+"/v2.0", "iss")
	m = jt.Set(m, "2.0", "ver")
	m = jt.Set(m, nil, "appid")
	m = jt.Set(m, nil, "appidacr")
	m = jt.Set(m, appid, "azp")
	return jt.Set(m, "2", "azpacr")
}

func set(m map[string]any, k string, v any) map[string]any { return jt.Set(m, v, k) }

// entraKey is a key in Entra ID's format: header
// {"typ":"JWT","alg":"RS256","x5t","kid"}, kid = x5t, the JWK with x5c.
type entraKey struct{ *jt.Key }

func newEntraKey(t testing.TB) entraKey {
	k := jt.RSA(t, "")
	k.KID = jt.X5T(k.Cert)
	return entraKey{k}
}

func (k entraKey) sign(t testing.TB, claims any) string {
	return k.Sign(t, map[string]any{"typ": "JWT", "x5t": k.KID}, claims)
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
		{"minimal", `{"tenant_id":"` + tenant + `","audience":"api://agentca"}`, ""},
		{"full", `{"tenant_id":"` + tenant + `","audience":"a","subscriptions":["` + sub + `"],"resource_groups":["web-rg","Prod_(1)"],"jwks_url":"https://k/keys"}`, ""},
		{"unknown field", `{"tenant_id":"` + tenant + `","audience":"a","tenant":"x"}`, `"tenant": unknown field`},
		{"missing tenant", `{"audience":"a"}`, "tenant_id: required"},
		{"bad tenant", `{"tenant_id":"contoso.onmicrosoft.com","audience":"a"}`, "tenant_id: \"contoso.onmicrosoft.com\" is not a GUID"},
		{"missing audience", `{"tenant_id":"` + tenant + `"}`, "audience: required"},
		{"bad subscription", `{"tenant_id":"` + tenant + `","audience":"a","subscriptions":["prod"]}`, "subscriptions[0]:"},
		{"bad resource group", `{"tenant_id":"` + tenant + `","audience":"a","resource_groups":["ok","bad/rg"]}`, "resource_groups[1]:"},
		{"rg ending in a dot", `{"tenant_id":"` + tenant + `","audience":"a","resource_groups":["rg."]}`, "resource_groups[0]:"},
		{"both jwks", `{"tenant_id":"` + tenant + `","audience":"a","jwks_file":"/f","jwks_url":"https://k"}`, "jwks_file: give jwks_file or jwks_url, not both"},
		{"http jwks", `{"tenant_id":"` + tenant + `","audience":"a","jwks_url":"http://k"}`, "jwks_url: must be an https URL"},
		{"wrong type", `{"tenant_id":"` + tenant + `","audience":"a","subscriptions":"x"}`, "subscriptions: want []string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := azuremsi.ParseConfig(json.RawMessage(tt.in))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "azuremsi: ")):
				t.Fatalf("err = %v; want %q", err, tt.want)
			}
		})
	}
}

func TestParseResourceID(t *testing.T) {
	good := []struct{ id, kind, name string }{
		{vmMirid, "vm", "web-1"},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/microsoft.compute/virtualmachinescalesets/pool", "vmss", "pool"},
		{"/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-id", "identity", "agent-id"},
	}
	for _, g := range good {
		c, err := azuremsi.ParseResourceID(g.id)
		if err != nil {
			t.Fatalf("%s: %v", g.id, err)
		}
		if c["kind"] != g.kind || c["name"] != g.name || c["subscription"] != sub || c["resource_id"] != g.id {
			t.Errorf("%s: %v", g.id, c)
		}
	}
	for _, bad := range []string{
		"",
		"/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.Web/sites/app",
		"/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extra",
		"/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/",
		"/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/..",
		"/subscriptions/not-a-guid/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
		"/subscriptions/" + sub + "/tags/rg/providers/Microsoft.Compute/virtualMachines/vm",
		"subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm/",
	} {
		if c, err := azuremsi.ParseResourceID(bad); err == nil {
			t.Errorf("%q accepted: %v", bad, c)
		}
	}
}

func newProv(t testing.TB, k entraKey, clk *jt.Clock, singleUse bool, extra string) *azuremsi.Provisioner {
	t.Helper()
	jwks := jt.WriteFile(t, "keys.json", jt.JWKS(k.JWK(true)))
	cfg, err := azuremsi.ParseConfig(json.RawMessage(`{"tenant_id":"` + tenant + `","audience":"` + aud + `","jwks_file":"` + jwks + `"` + extra + `}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := azuremsi.New("azure", cfg, azuremsi.Options{Now: clk.Now, SingleUse: singleUse})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAttest(t *testing.T) {
	clk := jt.NewClock()
	ek := newEntraKey(t)
	p := newProv(t, ek, clk, false, `,"subscriptions":["`+strings.ToUpper(sub)+`"],"resource_groups":["web-rg","shared"]`)
	now := clk.Now()
	good := msiToken(now, vmMirid)
	ctx := context.Background()

	for name, tok := range map[string]map[string]any{"v1.0": good, "v2.0": v2(good)} {
		id, err := p.Attest(ctx, ek.sign(t, tok))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := map[string]string{"tenant_id": tenant, "subscription": sub, "resource_group": "web-rg", "provider": "Microsoft.Compute",
			"resource_type": "virtualMachines", "kind": "vm", "name": "web-1", "resource_id": vmMirid, "principal_id": oid, "client_id": appid}
		if len(id.Claims) != len(want) || len(id.Once) != 0 || id.SPIFFEID != "" {
			t.Errorf("%s: identity = %+v", name, id)
		}
		for k, v := range want {
			if id.Claims[k] != v {
				t.Errorf("%s: claim %s = %q, want %q", name, k, id.Claims[k], v)
			}
		}
		if got := jt.Issue(t, azuremsi.DefaultTemplate, id); got != "spiffe://example.org/azure/"+sub+"/web-rg/vm/web-1" {
			t.Errorf("default template gave %s", got)
		}
	}
	uami := msiToken(now, "/subscriptions/"+sub+"/resourcegroups/shared/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent-id")
	if id, err := p.Attest(ctx, ek.sign(t, uami)); err != nil || id.Claims["kind"] != "identity" {
		t.Fatalf("user-assigned identity: %v, %v", id, err)
	}

	stranger := newEntraKey(t)
	hs := jt.HS256(t, ek.PublicPEM(t), ek.KID, good)
	tests := []struct{ name, token, want string }{
		{"bad signature", jt.Tamper(t, ek.sign(t, good), set(good, "tid", "11111111-2222-4333-8444-555555555555")), "bad signature"},
		{"unknown kid", stranger.sign(t, good), "unknown kid"},
		{"alg none", jt.Unsigned(map[string]any{"typ": "JWT", "alg": "none", "kid": ek.KID}, good), `"none" not allowed`},
		{"HS256 keyed with the public key", hs, `"HS256" not allowed`},
		{"expired", ek.sign(t, set(set(set(good, "iat", now.Add(-25*time.Hour).Unix()), "nbf", now.Add(-25*time.Hour).Unix()), "exp", now.Add(-time.Hour).Unix())), "expired"},
		{"nbf in the future", ek.sign(t, set(good, "nbf", now.Add(time.Hour).Unix())), "not valid before"},
		{"iat in the future", ek.sign(t, set(set(good, "iat", now.Add(2*time.Minute).Unix()), "nbf", nil)), "issued in the future"},
		{"lifetime over 28 hours", ek.sign(t, set(good, "exp", now.Add(30*time.Hour).Unix())), "lifetime"},
		{"wrong aud", ek.sign(t, set(good, "aud", "https://management.azure.com/")), "audience"},
		{"wrong iss (another tenant)", ek.sign(t, set(good, "iss", "https://sts.windows.net/"+otherSub+"/")), "issuer"},
		{"wrong iss (common)", ek.sign(t, set(good, "iss", "https://login.microsoftonline.com/common/v2.0")), "issuer"},
		{"tid of another tenant", ek.sign(t, set(good, "tid", otherSub)), "tenant"},
		{"v1 issuer with ver 2.0", ek.sign(t, set(good, "ver", "2.0")), "does not go with version"},
		{"v2 issuer with ver 1.0", ek.sign(t, set(v2(good), "ver", "1.0")), "does not go with version"},
		{"no ver", ek.sign(t, set(good, "ver", nil)), "claim ver: missing"},
		{"no tid", ek.sign(t, set(good, "tid", nil)), "claim tid: missing"},
		{"no xms_mirid (a user's token)", ek.sign(t, set(good, "xms_mirid", nil)), "xms_mirid: missing"},
		{"no oid", ek.sign(t, set(good, "oid", nil)), "oid"},
		{"subscription not allowed", ek.sign(t, msiToken(now, strings.Replace(vmMirid, sub, otherSub, 1))), "subscription " + otherSub + " not allowed"},
		{"resource group not allowed", ek.sign(t, msiToken(now, strings.Replace(vmMirid, "Web-RG", "other-rg", 1))), "resource group other-rg not allowed"},
		{"app service identity", ek.sign(t, msiToken(now, "/subscriptions/"+sub+"/resourcegroups/web-rg/providers/Microsoft.Web/sites/app")), "is not a VM"},
		{"mirid not a string", ek.sign(t, set(good, "xms_mirid", []string{vmMirid})), "xms_mirid: not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := p.Attest(ctx, tt.token)
			refused(t, id, err, tt.want)
		})
	}
}

func TestSingleUse(t *testing.T) {
	clk := jt.NewClock()
	ek := newEntraKey(t)
	p := newProv(t, ek, clk, true, "")
	good := msiToken(clk.Now(), vmMirid)
	id, err := p.Attest(context.Background(), ek.sign(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if want := "jti:azure:" + uti; len(id.Once) != 1 || id.Once[0] != want {
		t.Fatalf("Once = %q, want [%q]", id.Once, want)
	}
	jt.Issue(t, azuremsi.DefaultTemplate, id) // the second issuance is refused
	id, err = p.Attest(context.Background(), ek.sign(t, set(good, "uti", nil)))
	refused(t, id, err, "no usable uti")
}

// TestKeysURL: without jwks_file/jwks_url the tenant's keys URL is
// used; a JWKS URL reloads on an unknown kid, rate-limited.
func TestKeysURL(t *testing.T) {
	if got := azuremsi.DefaultJWKSURL(strings.ToUpper(tenant)); got != "https://login.microsoftonline.com/"+tenant+"/discovery/v2.0/keys" {
		t.Errorf("DefaultJWKSURL = %s", got)
	}
	clk := jt.NewClock()
	ek, rotated := newEntraKey(t), newEntraKey(t)
	srv := jt.NewServer(t, jt.JWKS(ek.JWK(true)))
	cfg := &azuremsi.Config{TenantID: tenant, Audience: aud, JWKSURL: srv.JWKSURL()}
	p, err := azuremsi.New("azure", cfg, azuremsi.Options{Now: clk.Now, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 3 {
		id, err := p.Attest(ctx, rotated.sign(t, msiToken(clk.Now(), vmMirid)))
		refused(t, id, err, "unknown kid")
	}
	if n := srv.JWKSFetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1", n)
	}
	srv.SetJWKS(jt.JWKS(ek.JWK(true), rotated.JWK(true)))
	clk.Advance(10 * time.Second)
	if _, err := p.Attest(ctx, rotated.sign(t, msiToken(clk.Now(), vmMirid))); err != nil {
		t.Fatal(err)
	}
	if n := srv.JWKSFetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

// FuzzAzureMSIAttest: no token string panics Attest, every refusal is
// ErrUnauthorized, and a token is accepted only if it verifies with the
// tenant's key.
func FuzzAzureMSIAttest(f *testing.F) {
	clk := jt.NewClock()
	ek := newEntraKey(f)
	p := newProv(f, ek, clk, true, "")
	good := msiToken(clk.Now(), vmMirid)
	f.Add(ek.sign(f, good))
	f.Add(ek.sign(f, v2(good)))
	f.Add(ek.sign(f, set(good, "xms_mirid", "/subscriptions/x")))
	f.Add(jt.HS256(f, ek.PublicPEM(f), ek.KID, good))
	f.Add(jt.Unsigned(map[string]any{"alg": "none", "kid": ek.KID}, good))
	pub := ek.Signer.Public()
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
			t.Fatalf("accepted a token the tenant's key does not verify: %q", token)
		}
		if id.Claims["tenant_id"] != tenant || len(id.Once) != 1 {
			t.Fatalf("identity = %+v", id)
		}
	})
}
