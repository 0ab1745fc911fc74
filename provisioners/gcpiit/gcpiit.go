// Package gcpiit is the gcp-iit provisioner: a Google Compute Engine
// instance proves which instance it is with the instance identity token
// its metadata server mints (format=full), a JWT Google signs.
//
// Verified: the RS256 signature against Google's OAuth2 keys (or the
// configured jwks_file/jwks_url); "iss" https://accounts.google.com (or
// accounts.google.com, which Google also emits); "aud" containing the
// configured audience; exp/iat (and nbf if present) with 60 s of skew, and
// exp-iat at most one hour, Google's token lifetime. The claims under
// google.compute_engine — project_id, project_number, zone, instance_id,
// instance_name, instance_creation_timestamp — are all required (a token
// minted without format=full has none) and must be well formed, and the
// project must be in the allow-list.
//
// Any instance in any project can ask its metadata server for a token with
// any audience, so the audience alone proves nothing: the projects
// allow-list is required. And since the token carries no jti and lives an
// hour, each instance enrolls once (trust on first use): Identity.Once is
// "gcp-iit:<provisioner>:<project_id>:<instance_id>", recorded with the
// certificate; renewals go through mTLS.
package gcpiit

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
// none.
const DefaultTemplate = "spiffe://{{.trust_domain}}/gcp/{{.project_id}}/{{.zone}}/{{.instance_id}}"

// DefaultJWKSURL is Google's OAuth2 signing keys.
const DefaultJWKSURL = "https://www.googleapis.com/oauth2/v3/certs"

// Issuers are the "iss" values Google uses.
var Issuers = []string{"https://accounts.google.com", "accounts.google.com"}

// MaxTokenLifetime is Google's identity-token lifetime.
const MaxTokenLifetime = time.Hour

// Claim names, for templates.
const (
	ClaimProjectID         = "project_id"
	ClaimProjectNumber     = "project_number"
	ClaimZone              = "zone"
	ClaimRegion            = "region" // the zone without its last "-x"
	ClaimInstanceID        = "instance_id"
	ClaimInstanceName      = "instance_name"
	ClaimInstanceCreated   = "instance_creation_timestamp" // Unix seconds
	ClaimServiceAccount    = "service_account_email"       // only when the token has "email"
	ClaimServiceAccountUID = "service_account_id"          // "sub"
)

// Config is a gcp-iit provisioner's type-specific configuration.
type Config struct {
	// Audience must be in the tokens' "aud"; agents request tokens for
	// it. Required; usually the CA's URL.
	Audience string `json:"audience"`
	// Projects are the project IDs accepted. Required.
	Projects []string `json:"projects"`
	// JWKSFile or JWKSURL override Google's keys (DefaultJWKSURL).
	JWKSFile string `json:"jwks_file,omitempty"`
	JWKSURL  string `json:"jwks_url,omitempty"`
}

var (
	// Project IDs: 6-30 characters, with the legacy domain prefix.
	projectRE = regexp.MustCompile(`^([a-z][-a-z0-9.]*[a-z0-9]:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$`)
	zoneRE    = regexp.MustCompile(`^[a-z]+-[a-z]+[0-9]+-[a-z]$`)
	nameRE    = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)
	digitsRE  = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
)

// ParseConfig decodes and validates the options strictly: unknown fields
// are errors, and errors name the field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	var c Config
	if err := jwtverify.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("gcpiit: %w", err)
	}
	bad := func(field, format string, args ...any) (*Config, error) {
		return nil, fmt.Errorf("gcpiit: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Audience == "":
		return bad("audience", "required")
	case strings.TrimSpace(c.Audience) != c.Audience:
		return bad("audience", "leading or trailing space")
	case len(c.Projects) == 0:
		return bad("projects", "required (any instance of any project can mint a token for any audience)")
	case c.JWKSFile != "" && c.JWKSURL != "":
		return bad("jwks_file", "give jwks_file or jwks_url, not both")
	}
	if err := strictjson.Each("projects", c.Projects, projectRE.MatchString, "a project ID"); err != nil {
		return nil, fmt.Errorf("gcpiit: %w", err)
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

// Provisioner is a gcp-iit provisioner.
type Provisioner struct {
	name     string
	projects []string
	verifier *jwtverify.Verifier
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// New returns the provisioner called name. A jwks_file is read now.
func New(name string, cfg *Config, opts Options) (*Provisioner, error) {
	if name == "" || cfg == nil {
		return nil, errors.New("gcpiit: name and config are required")
	}
	if opts.SingleUse {
		return nil, errors.New("gcpiit: single_use: Google's identity tokens carry no jti; each instance enrolls once regardless")
	}
	kc := jwtverify.KeysConfig{File: cfg.JWKSFile, URL: cfg.JWKSURL, HTTPClient: opts.HTTPClient, Now: opts.Now, Logger: opts.Logger}
	if kc.File == "" && kc.URL == "" {
		kc.URL = DefaultJWKSURL
	}
	keys, err := jwtverify.NewKeys(kc)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: jwks_file: %w", err)
	}
	v, err := jwtverify.New(jwtverify.Config{Issuers: Issuers, Audience: cfg.Audience, Algorithms: []string{"RS256"},
		MaxLifetime: MaxTokenLifetime, Keys: keys, Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("gcpiit: %w", err)
	}
	return &Provisioner{name: name, projects: slices.Clone(cfg.Projects), verifier: v}, nil
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: gcp-iit: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// Attest implements provisioners.Provisioner.
func (p *Provisioner) Attest(ctx context.Context, token string) (*provisioners.Identity, error) {
	tok, err := p.verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	claims, err := instanceClaims(tok)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(p.projects, claims[ClaimProjectID]) {
		return nil, refuse("project %q not allowed", claims[ClaimProjectID])
	}
	return &provisioners.Identity{
		Once:   []string{"gcp-iit:" + p.name + ":" + claims[ClaimProjectID] + ":" + claims[ClaimInstanceID]},
		Claims: claims,
	}, nil
}

// instanceClaims reads "google": {"compute_engine": {...}} of a
// format=full token: project_id, project_number (number), zone,
// instance_id (string of digits), instance_name,
// instance_creation_timestamp (number).
func instanceClaims(tok *jwtverify.Token) (map[string]string, error) {
	c := tok.Claims
	out := map[string]string{}
	ce := []string{"google", "compute_engine"}
	for _, f := range []struct {
		name string
		num  bool
		re   *regexp.Regexp
	}{
		{ClaimProjectID, false, projectRE},
		{ClaimProjectNumber, true, digitsRE},
		{ClaimZone, false, zoneRE},
		{ClaimInstanceID, false, digitsRE},
		{ClaimInstanceName, false, nameRE},
		{ClaimInstanceCreated, true, digitsRE},
	} {
		path := append(slices.Clone(ce), f.name)
		var v string
		var err error
		if f.num {
			v, err = c.Uint(path...)
		} else {
			v, err = c.String(path...)
		}
		if err != nil {
			return nil, refuse("%v", err)
		}
		if !f.re.MatchString(v) {
			return nil, refuse("google.compute_engine.%s %q malformed", f.name, trunc(v))
		}
		out[f.name] = v
	}
	out[ClaimRegion] = out[ClaimZone][:strings.LastIndexByte(out[ClaimZone], '-')]
	if tok.Subject == "" {
		return nil, refuse("no sub")
	}
	out[ClaimServiceAccountUID] = tok.Subject
	if c.Has("email") {
		email, err := c.String("email")
		if err != nil {
			return nil, refuse("%v", err)
		}
		out[ClaimServiceAccount] = email
	}
	return out, nil
}

func trunc(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
