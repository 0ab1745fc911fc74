// Package k8ssa is the k8s-sa provisioner: a pod proves which Kubernetes
// service account it runs as with a projected service-account token (a JWT
// the API server signs, bound to the pod and to an audience).
//
// Offline mode (no api_server): the token's signature is verified against
// the cluster's service-account issuer keys (jwks_file, jwks_url, or OIDC
// discovery of issuer), with RS256/ES256/ES384/ES512 only. "iss" must equal
// issuer, "aud" must contain audience (so a token minted for another
// service cannot be replayed here), exp/nbf/iat are checked with 60 s of
// skew and exp-iat may not exceed MaxTokenLifetime. The token must be
// bound to a pod: the claims kubernetes.io.namespace,
// kubernetes.io.serviceaccount.{name,uid} and kubernetes.io.pod.{name,uid}
// are required, and "sub" must be system:serviceaccount:<ns>:<sa>. The
// namespace and ns/sa allow-lists are applied last.
//
// TokenReview mode (api_server set), as SPIRE's k8s_psat: the same claim
// checks (and the signature too if jwks_file or jwks_url is given), then
// the API server's TokenReview must say the token is authenticated for the
// audience, as the same service account, and the pod the token names must
// still exist with the token's pod UID: a token outlives neither its pod
// nor a deleted-and-recreated pod of the same name. Any failure to reach
// the API server refuses the token.
//
// With single_use, each token's jti is a replay key (Identity.Once
// "jti:<provisioner>:<jti>"), recorded with the certificate.
package k8ssa

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
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
const DefaultTemplate = "spiffe://{{.trust_domain}}/ns/{{.namespace}}/sa/{{.service_account}}"

// MaxTokenLifetime bounds exp-iat. Projected tokens live 10 minutes to a
// few hours; the deploy manifests ask for 600 s.
const MaxTokenLifetime = 24 * time.Hour

// Algorithms are the signature algorithms Kubernetes uses for
// service-account tokens (RSA keys: RS256; EC keys: ES256/384/512).
var Algorithms = []string{"RS256", "ES256", "ES384", "ES512"}

// Claims names, for templates.
const (
	ClaimNamespace         = "namespace"
	ClaimServiceAccount    = "service_account"
	ClaimServiceAccountUID = "service_account_uid"
	ClaimPodName           = "pod_name"
	ClaimPodUID            = "pod_uid"
	ClaimNodeName          = "node_name" // only when the token carries it (Kubernetes 1.30+)
	ClaimIssuer            = "issuer"
)

// Config is a k8s-sa provisioner's type-specific configuration.
type Config struct {
	// Issuer is the cluster's service-account issuer
	// (--service-account-issuer), the tokens' "iss". Required.
	Issuer string `json:"issuer"`
	// Audience must be in the tokens' "aud". Required.
	Audience string `json:"audience"`
	// JWKSFile or JWKSURL hold the issuer's keys; with neither, offline
	// mode discovers them from {issuer}/.well-known/openid-configuration
	// and TokenReview mode leaves the signature to the API server.
	JWKSFile string `json:"jwks_file,omitempty"`
	JWKSURL  string `json:"jwks_url,omitempty"`
	// APIServer (https URL) turns on TokenReview mode; APICAFile (PEM)
	// verifies its certificate (system roots if empty); APITokenFile is
	// the bearer token the CA authenticates with, re-read at each request
	// so that a rotated token is picked up. Both files need api_server;
	// api_token_file is required with it.
	APIServer    string `json:"api_server,omitempty"`
	APICAFile    string `json:"api_ca_file,omitempty"`
	APITokenFile string `json:"api_token_file,omitempty"`
	// Namespaces, if any, are the only namespaces accepted.
	Namespaces []string `json:"namespaces,omitempty"`
	// ServiceAccounts, if any, are the only "namespace/name" service
	// accounts accepted. With both lists, both must allow the caller.
	ServiceAccounts []string `json:"service_accounts,omitempty"`
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	uuidRE       = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

func isSubdomain(s string) bool { return len(s) <= 253 && dnsSubdomain.MatchString(s) }

// ParseConfig decodes and validates the options strictly: unknown fields
// are errors, and errors name the field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	var c Config
	if err := jwtverify.DecodeStrict(raw, &c); err != nil {
		return nil, fmt.Errorf("k8ssa: %w", err)
	}
	bad := func(field, format string, args ...any) (*Config, error) {
		return nil, fmt.Errorf("k8ssa: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Issuer == "":
		return bad("issuer", "required")
	case strings.TrimSpace(c.Issuer) != c.Issuer:
		return bad("issuer", "leading or trailing space")
	case c.Audience == "":
		return bad("audience", "required")
	case strings.TrimSpace(c.Audience) != c.Audience:
		return bad("audience", "leading or trailing space")
	case c.JWKSFile != "" && c.JWKSURL != "":
		return bad("jwks_file", "give jwks_file or jwks_url, not both")
	}
	if c.JWKSURL != "" {
		if err := jwtverify.CheckHTTPSURL(c.JWKSURL); err != nil {
			return bad("jwks_url", "%v", err)
		}
	}
	if c.APIServer != "" {
		if err := jwtverify.CheckHTTPSURL(c.APIServer); err != nil {
			return bad("api_server", "%v", err)
		}
		if u, _ := url.Parse(c.APIServer); u.RawQuery != "" || u.ForceQuery {
			return bad("api_server", "must not have a query")
		}
		if c.APITokenFile == "" {
			return bad("api_token_file", "required with api_server")
		}
	} else {
		if c.APICAFile != "" {
			return bad("api_ca_file", "needs api_server")
		}
		if c.APITokenFile != "" {
			return bad("api_token_file", "needs api_server")
		}
		if c.JWKSFile == "" && c.JWKSURL == "" {
			if err := jwtverify.CheckHTTPSURL(c.Issuer); err != nil {
				return bad("issuer", "keys are discovered from the issuer when there is no jwks_file, jwks_url or api_server: %v", err)
			}
		}
	}
	if err := strictjson.Each("namespaces", c.Namespaces, dnsLabel.MatchString, "a namespace name"); err != nil {
		return nil, fmt.Errorf("k8ssa: %w", err)
	}
	for i, sa := range c.ServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || !dnsLabel.MatchString(ns) || !isSubdomain(name) {
			return bad(fmt.Sprintf("service_accounts[%d]", i), "%q is not namespace/serviceaccount", sa)
		}
	}
	return &c, nil
}

// Options are a provisioner's dependencies (shared by the JWT
// provisioners). The zero value is usable.
type Options = jwtverify.Options

// Provisioner is a k8s-sa provisioner.
type Provisioner struct {
	name      string
	cfg       Config
	singleUse bool
	verifier  *jwtverify.Verifier
	signed    bool // the signature is verified here
	review    *reviewer
	// reviews bounds the TokenReview calls of unsigned (claims-only)
	// tokens; nil when the signature is checked first.
	reviews *bucket
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// New returns the provisioner called name. It reads jwks_file and
// api_ca_file now; URLs are first fetched at the first token.
func New(name string, cfg *Config, opts Options) (*Provisioner, error) {
	if name == "" || cfg == nil {
		return nil, errors.New("k8ssa: name and config are required")
	}
	p := &Provisioner{name: name, cfg: *cfg, singleUse: opts.SingleUse}
	var keys *jwtverify.Keys
	if cfg.JWKSFile != "" || cfg.JWKSURL != "" || cfg.APIServer == "" {
		kc := jwtverify.KeysConfig{File: cfg.JWKSFile, URL: cfg.JWKSURL, HTTPClient: opts.HTTPClient, Now: opts.Now, Logger: opts.Logger}
		if cfg.JWKSFile == "" && cfg.JWKSURL == "" {
			kc.Issuer = cfg.Issuer
		}
		var err error
		if keys, err = jwtverify.NewKeys(kc); err != nil {
			return nil, fmt.Errorf("k8ssa: jwks_file: %w", err)
		}
		p.signed = true
	}
	v, err := jwtverify.New(jwtverify.Config{Issuers: []string{cfg.Issuer}, Audience: cfg.Audience,
		Algorithms: Algorithms, MaxLifetime: MaxTokenLifetime, Keys: keys, Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("k8ssa: %w", err)
	}
	p.verifier = v
	if cfg.APIServer != "" {
		if p.review, err = newReviewer(cfg); err != nil {
			return nil, err
		}
		if !p.signed {
			p.reviews = newBucket(ReviewRate, ReviewBurst, opts.Now)
		}
	}
	return p, nil
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: k8s-sa: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// sa is what a token says about its pod.
type sa struct {
	namespace, name, uid, pod, podUID, node string
}

// Attest implements provisioners.Provisioner.
func (p *Provisioner) Attest(ctx context.Context, token string) (*provisioners.Identity, error) {
	var tok *jwtverify.Token
	var err error
	if p.signed {
		tok, err = p.verifier.Verify(ctx, token)
	} else {
		tok, err = p.verifier.VerifyClaimsOnly(token)
	}
	if err != nil {
		return nil, err
	}
	s, err := podClaims(tok)
	if err != nil {
		return nil, err
	}
	if len(p.cfg.Namespaces) > 0 && !slices.Contains(p.cfg.Namespaces, s.namespace) {
		return nil, refuse("namespace %q not allowed", s.namespace)
	}
	if len(p.cfg.ServiceAccounts) > 0 && !slices.Contains(p.cfg.ServiceAccounts, s.namespace+"/"+s.name) {
		return nil, refuse("service account %s/%s not allowed", s.namespace, s.name)
	}
	var once []string
	if p.singleUse {
		if tok.ID == "" || len(tok.ID) > 256 {
			return nil, refuse("single_use: the token has no usable jti")
		}
		once = []string{"jti:" + p.name + ":" + tok.ID}
	}
	if p.review != nil {
		if p.reviews != nil && !p.reviews.allow() {
			return nil, refuse("TokenReview: more than %d calls a second to the API server for tokens whose signature the CA cannot check (no jwks_file or jwks_url); retry later", ReviewRate)
		}
		if err := p.review.check(ctx, token, p.cfg.Audience, s); err != nil {
			return nil, err
		}
	}
	claims := map[string]string{
		ClaimNamespace: s.namespace, ClaimServiceAccount: s.name, ClaimServiceAccountUID: s.uid,
		ClaimPodName: s.pod, ClaimPodUID: s.podUID, ClaimIssuer: tok.Issuer,
	}
	if s.node != "" {
		claims[ClaimNodeName] = s.node
	}
	return &provisioners.Identity{Once: once, Claims: claims}, nil
}

// podClaims reads and checks the kubernetes.io claims of a pod-bound
// projected token:
//
//	"sub": "system:serviceaccount:<ns>:<sa>",
//	"kubernetes.io": {"namespace": ns,
//	  "pod": {"name", "uid"}, "serviceaccount": {"name", "uid"},
//	  "node": {"name", "uid"} (1.30+, optional)}
func podClaims(tok *jwtverify.Token) (*sa, error) {
	// The nested "kubernetes.io" object is decoded once, not per field.
	c, err := tok.Claims.Object("kubernetes.io")
	if err != nil {
		return nil, refuse("%v", err)
	}
	var s sa
	get := func(dst *string, path ...string) {
		if err != nil {
			return
		}
		if *dst, err = c.String(path...); err != nil {
			// Name the claim by its full path in the token.
			err = errors.New(strings.Replace(err.Error(), "claim ", "claim kubernetes.io.", 1))
		}
	}
	get(&s.namespace, "namespace")
	get(&s.name, "serviceaccount", "name")
	get(&s.uid, "serviceaccount", "uid")
	get(&s.pod, "pod", "name")
	get(&s.podUID, "pod", "uid")
	if err == nil && c.Has("node") {
		get(&s.node, "node", "name")
	}
	if err != nil {
		return nil, refuse("%v", err)
	}
	switch {
	// The claims may not be signed yet (TokenReview mode): what the
	// refusals quote is truncated.
	case !dnsLabel.MatchString(s.namespace):
		return nil, refuse("namespace %q malformed", trunc(s.namespace))
	case !isSubdomain(s.name):
		return nil, refuse("service account name %q malformed", trunc(s.name))
	case !isSubdomain(s.pod):
		return nil, refuse("pod name %q malformed", trunc(s.pod))
	case !uuidRE.MatchString(s.uid) || !uuidRE.MatchString(s.podUID):
		return nil, refuse("service account or pod uid malformed")
	case s.node != "" && !isSubdomain(s.node):
		return nil, refuse("node name %q malformed", trunc(s.node))
	case tok.Subject != "system:serviceaccount:"+s.namespace+":"+s.name:
		return nil, refuse("sub %q does not name service account %s/%s", trunc(tok.Subject), s.namespace, s.name)
	}
	return &s, nil
}

// reviewer asks the API server.
type reviewer struct {
	base      *url.URL
	tokenFile string
	client    *http.Client
}

func newReviewer(cfg *Config) (*reviewer, error) {
	base, err := url.Parse(strings.TrimSuffix(cfg.APIServer, "/"))
	if err != nil {
		return nil, fmt.Errorf("k8ssa: api_server: %w", err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.APICAFile != "" {
		pemBytes, err := os.ReadFile(cfg.APICAFile)
		if err != nil {
			return nil, fmt.Errorf("k8ssa: api_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("k8ssa: api_ca_file: no PEM certificates in %s", cfg.APICAFile)
		}
		tlsCfg.RootCAs = pool
	}
	if _, err := readToken(cfg.APITokenFile); err != nil {
		return nil, fmt.Errorf("k8ssa: api_token_file: %w", err)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &reviewer{base: base, tokenFile: cfg.APITokenFile,
		client: &http.Client{Transport: tr, Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the API server redirected")
		}}}, nil
}
