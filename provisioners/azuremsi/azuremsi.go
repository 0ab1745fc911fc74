// Package azuremsi is the azure-msi provisioner: an Azure VM (or anything
// holding a user-assigned managed identity) proves which resource it is
// with a managed-identity access token from the instance metadata service
// (IMDS), a JWT Microsoft Entra ID signs.
//
// Verified: the RS256 signature against the tenant's keys
// (https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys, or the
// configured jwks_file/jwks_url); "tid" equal to tenant_id; the issuer of
// that tenant in the form the token's version uses — v1.0 tokens
// "https://sts.windows.net/<tenant>/", v2.0 tokens
// "https://login.microsoftonline.com/<tenant>/v2.0" (which form a token
// has depends on the audience application's accessTokenAcceptedVersion;
// both are accepted, each only with its own "ver"); "aud" containing the
// configured audience; exp/iat/nbf with 60 s of skew and exp-iat at most
// MaxTokenLifetime. "xms_mirid", the managed identity's resource ID, is
// required and parsed:
//
//	/subscriptions/<sub>/resourcegroups/<rg>/providers/<provider>/<type>/<name>
//
// for a VM's or scale set's system-assigned identity
// (Microsoft.Compute/virtualMachines, .../virtualMachineScaleSets) or a
// user-assigned identity (Microsoft.ManagedIdentity/userAssignedIdentities);
// other resource types are refused. The subscription and resource group
// must be in the allow-lists when they are given.
//
// The tenant is the anchor: any tenant can mint tokens for an audience it
// names, but only Entra ID signs "tid". IMDS caches a token for up to a
// day, so a stolen token replays until it expires; with single_use each
// token's "uti" (Entra's unique token id; these tokens carry no "jti") is
// a replay key, Identity.Once "jti:<provisioner>:<uti>" — the agent then
// enrolls once per IMDS token, and renews through mTLS.
package azuremsi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/internal/jwtverify"
	"github.com/agentca/agentca/provisioners/internal/strictjson"
)

// DefaultTemplate is the SPIFFE ID template when the configuration gives
// none. The kind segment keeps a VM and a user-assigned identity of the
// same name apart.
const DefaultTemplate = "spiffe://{{.trust_domain}}/azure/{{.subscription}}/{{.resource_group}}/{{.kind}}/{{.name}}"

// MaxTokenLifetime bounds exp-iat: managed-identity tokens live about 24
// hours, up to 28 with continuous access evaluation.
const MaxTokenLifetime = 28 * time.Hour

// Claim names, for templates. subscription, resource_group and name are
// lower-cased (Azure compares them case-insensitively); resource_id is
// xms_mirid as given.
const (
	ClaimTenantID      = "tenant_id"
	ClaimSubscription  = "subscription"
	ClaimResourceGroup = "resource_group"
	ClaimProvider      = "provider"      // Microsoft.Compute, Microsoft.ManagedIdentity
	ClaimResourceType  = "resource_type" // virtualMachines, virtualMachineScaleSets, userAssignedIdentities
	ClaimKind          = "kind"          // vm, vmss, identity
	ClaimName          = "name"
	ClaimResourceID    = "resource_id"
	ClaimPrincipalID   = "principal_id" // oid
	ClaimClientID      = "client_id"    // appid (v1.0) or azp (v2.0), when present
)

// kinds are the managed-identity resource types accepted, by lower-case
// "provider/type".
var kinds = map[string]struct{ provider, typ, kind string }{
	"microsoft.compute/virtualmachines":                {"Microsoft.Compute", "virtualMachines", "vm"},
	"microsoft.compute/virtualmachinescalesets":        {"Microsoft.Compute", "virtualMachineScaleSets", "vmss"},
	"microsoft.managedidentity/userassignedidentities": {"Microsoft.ManagedIdentity", "userAssignedIdentities", "identity"},
}

// Config is an azure-msi provisioner's type-specific configuration.
type Config struct {
	// TenantID is the directory (tenant) GUID. Required.
	TenantID string `json:"tenant_id"`
	// Audience must be in the tokens' "aud": the resource the agent asks
	// IMDS a token for (an application ID URI such as api://agentca, or
	// the application's client ID). Required.
	Audience string `json:"audience"`
	// Subscriptions, if any, are the subscription GUIDs accepted.
	Subscriptions []string `json:"subscriptions,omitempty"`
	// ResourceGroups, if any, are the resource group names accepted (in
	// any accepted subscription), compared case-insensitively.
	ResourceGroups []string `json:"resource_groups,omitempty"`
	// JWKSFile or JWKSURL override the tenant's keys.
	JWKSFile string `json:"jwks_file,omitempty"`
	JWKSURL  string `json:"jwks_url,omitempty"`
}

var (
	guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// Resource group: 1-90 of letters, digits, _ - . ( ), not ending in ".".
	rgRE = regexp.MustCompile(`^[-\w.()]{0,89}[-\w()]$`)
	// VM, scale set and identity names.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
)

// ParseConfig decodes and validates the options strictly: unknown fields
// are errors, and errors name the field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	var c Config
	if err := jwtverify.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	bad := func(field, format string, args ...any) (*Config, error) {
		return nil, fmt.Errorf("azuremsi: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.TenantID == "":
		return bad("tenant_id", "required")
	case !guidRE.MatchString(c.TenantID):
		return bad("tenant_id", "%q is not a GUID", c.TenantID)
	case c.Audience == "":
		return bad("audience", "required")
	case strings.TrimSpace(c.Audience) != c.Audience:
		return bad("audience", "leading or trailing space")
	case c.JWKSFile != "" && c.JWKSURL != "":
		return bad("jwks_file", "give jwks_file or jwks_url, not both")
	}
	if err := strictjson.Each("subscriptions", c.Subscriptions, guidRE.MatchString, "a GUID"); err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	if err := strictjson.Each("resource_groups", c.ResourceGroups, rgRE.MatchString, "a resource group name"); err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	if c.JWKSURL != "" {
		if err := jwtverify.CheckHTTPSURL(c.JWKSURL); err != nil {
			return bad("jwks_url", "%v", err)
		}
	}
	return &c, nil
}

// Options are a provisioner's dependencies (shared by the JWT
// provisioners). The zero value is usable.
type Options = jwtverify.Options

// Provisioner is an azure-msi provisioner.
type Provisioner struct {
	name      string
	tenant    string // lower case
	subs      []string
	rgs       []string
	singleUse bool
	verifier  *jwtverify.Verifier
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// DefaultJWKSURL returns the tenant's signing keys URL.
func DefaultJWKSURL(tenant string) string {
	return "https://login.microsoftonline.com/" + strings.ToLower(tenant) + "/discovery/v2.0/keys"
}

// Issuers returns the accepted "iss" values for a tenant: v1.0 and v2.0.
func Issuers(tenant string) (v1, v2 string) {
	t := strings.ToLower(tenant)
	return "https://sts.windows.net/" + t + "/", "https://login.microsoftonline.com/" + t + "/v2.0"
}

// New returns the provisioner called name. A jwks_file is read now.
func New(name string, cfg *Config, opts Options) (*Provisioner, error) {
	if name == "" || cfg == nil {
		return nil, errors.New("azuremsi: name and config are required")
	}
	if !guidRE.MatchString(cfg.TenantID) {
		return nil, errors.New("azuremsi: tenant_id: not a GUID")
	}
	kc := jwtverify.KeysConfig{File: cfg.JWKSFile, URL: cfg.JWKSURL, HTTPClient: opts.HTTPClient, Now: opts.Now, Logger: opts.Logger}
	if kc.File == "" && kc.URL == "" {
		kc.URL = DefaultJWKSURL(cfg.TenantID)
	}
	keys, err := jwtverify.NewKeys(kc)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: jwks_file: %w", err)
	}
	v1, v2 := Issuers(cfg.TenantID)
	v, err := jwtverify.New(jwtverify.Config{Issuers: []string{v1, v2}, Audience: cfg.Audience, Algorithms: []string{"RS256"},
		MaxLifetime: MaxTokenLifetime, Keys: keys, Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("azuremsi: %w", err)
	}
	p := &Provisioner{name: name, tenant: strings.ToLower(cfg.TenantID), singleUse: opts.SingleUse, verifier: v}
	for _, s := range cfg.Subscriptions {
		p.subs = append(p.subs, strings.ToLower(s))
	}
	for _, rg := range cfg.ResourceGroups {
		p.rgs = append(p.rgs, strings.ToLower(rg))
	}
	return p, nil
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: azure-msi: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// Attest implements provisioners.Provisioner.
func (p *Provisioner) Attest(ctx context.Context, token string) (*provisioners.Identity, error) {
	tok, err := p.verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	c := tok.Claims
	tid, err := c.String("tid")
	if err != nil {
		return nil, refuse("%v", err)
	}
	if strings.ToLower(tid) != p.tenant {
		return nil, refuse("tenant %q is not %s", trunc(tid), p.tenant)
	}
	ver, err := c.String("ver")
	if err != nil {
		return nil, refuse("%v", err)
	}
	v1, v2 := Issuers(p.tenant)
	clientClaim := "appid"
	switch {
	case ver == "1.0" && tok.Issuer == v1:
	case ver == "2.0" && tok.Issuer == v2:
		clientClaim = "azp"
	default:
		return nil, refuse("issuer %q does not go with version %q", tok.Issuer, trunc(ver))
	}
	mirid, err := c.String("xms_mirid")
	if err != nil {
		return nil, refuse("%v (not a managed-identity token)", err)
	}
	claims, err := ParseResourceID(mirid)
	if err != nil {
		return nil, refuse("xms_mirid: %v", err)
	}
	if len(p.subs) > 0 && !slices.Contains(p.subs, claims[ClaimSubscription]) {
		return nil, refuse("subscription %s not allowed", claims[ClaimSubscription])
	}
	if len(p.rgs) > 0 && !slices.Contains(p.rgs, claims[ClaimResourceGroup]) {
		return nil, refuse("resource group %s not allowed", claims[ClaimResourceGroup])
	}
	oid, err := c.String("oid")
	if err != nil || !guidRE.MatchString(oid) {
		return nil, refuse("oid missing or not a GUID")
	}
	claims[ClaimPrincipalID] = strings.ToLower(oid)
	claims[ClaimTenantID] = p.tenant
	if c.Has(clientClaim) {
		id, err := c.String(clientClaim)
		if err != nil || !guidRE.MatchString(id) {
			return nil, refuse("%s not a GUID", clientClaim)
		}
		claims[ClaimClientID] = strings.ToLower(id)
	}
	var once []string
	if p.singleUse {
		uti, err := c.String("uti")
		if err != nil || len(uti) > 256 {
			return nil, refuse("single_use: the token has no usable uti")
		}
		once = []string{"jti:" + p.name + ":" + uti}
	}
	return &provisioners.Identity{Once: once, Claims: claims}, nil
}

// ParseResourceID parses a managed identity's resource ID (xms_mirid),
// /subscriptions/<sub>/resourcegroups/<rg>/providers/<provider>/<type>/<name>,
// into the claims subscription, resource_group, provider, resource_type,
// kind, name and resource_id. Keywords are matched case-insensitively.
func ParseResourceID(id string) (map[string]string, error) {
	seg := strings.Split(id, "/")
	if len(seg) != 9 || seg[0] != "" {
		return nil, fmt.Errorf("%q is not /subscriptions/…/resourcegroups/…/providers/…/…/…", trunc(id))
	}
	if !strings.EqualFold(seg[1], "subscriptions") || !strings.EqualFold(seg[3], "resourcegroups") || !strings.EqualFold(seg[5], "providers") {
		return nil, fmt.Errorf("%q is not /subscriptions/…/resourcegroups/…/providers/…/…/…", trunc(id))
	}
	sub, rg, name := seg[2], seg[4], seg[8]
	k, ok := kinds[strings.ToLower(seg[6]+"/"+seg[7])]
	switch {
	case !guidRE.MatchString(sub):
		return nil, fmt.Errorf("subscription %q is not a GUID", trunc(sub))
	case !rgRE.MatchString(rg):
		return nil, fmt.Errorf("resource group %q malformed", trunc(rg))
	case !ok:
		return nil, fmt.Errorf("resource type %s/%s is not a VM, scale set or user-assigned identity", trunc(seg[6]), trunc(seg[7]))
	case !nameRE.MatchString(name):
		return nil, fmt.Errorf("name %q malformed", trunc(name))
	}
	return map[string]string{
		ClaimSubscription: strings.ToLower(sub), ClaimResourceGroup: strings.ToLower(rg),
		ClaimProvider: k.provider, ClaimResourceType: k.typ, ClaimKind: k.kind,
		ClaimName: strings.ToLower(name), ClaimResourceID: id,
	}, nil
}

func trunc(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
