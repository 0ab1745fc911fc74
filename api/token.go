package api

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/wire"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// TokenOptions configure the OAuth 2.0 token endpoint (POST /v1/token),
// its JWKS and its authorization server metadata. See docs/tokens.md.
type TokenOptions struct {
	// Signer is the token key, ECDSA P-256 (ES256). Required.
	Signer crypto.Signer
	// Issuer is the tokens' "iss" and the metadata's issuer: the CA's
	// public HTTPS URL. Required.
	Issuer string
	// DefaultTTL is a token's lifetime when the request names none; zero
	// means 5 minutes. MaxTTL bounds a requested one; zero means 1 hour.
	// A token never outlives the client certificate it is bound to.
	DefaultTTL, MaxTTL time.Duration
	// Scopes are the scopes a token may carry; any other is
	// invalid_scope. Empty: every scope is unknown.
	Scopes []string
	// Audiences are the resources and audiences a token may name
	// (exactly); empty means any absolute https URL or a SPIFFE ID in the
	// trust domain.
	Audiences []string
	// PreviousKeys are ECDSA P-256 public keys published in the JWKS
	// beside Signer's (a key rotation), never used to sign.
	PreviousKeys []crypto.PublicKey
	// Exchange, when set, turns on RFC 8693 token exchange (exchange.go).
	Exchange *ExchangeOptions
}

// Token endpoint limits.
const (
	maxTokenForm      = 8 << 10
	maxTokenAudiences = 8
	maxTokenScopes    = 32
	maxAudienceLength = 512
)

// OAuth 2.0 error codes of the token endpoint (RFC 6749 §5.2, RFC 8707).
const (
	OAuthInvalidRequest       = "invalid_request"
	OAuthInvalidClient        = "invalid_client"
	OAuthUnsupportedGrantType = "unsupported_grant_type"
	OAuthInvalidScope         = "invalid_scope"
	OAuthInvalidTarget        = "invalid_target"
	OAuthAccessDenied         = "access_denied"
	OAuthUnavailable          = "temporarily_unavailable"
)

// OAuthError is a token endpoint error (RFC 6749 §5.2): its HTTP status
// and what its JSON body says. In JSON it is that body, wire.OAuthError.
type OAuthError struct {
	Status      int
	Code        string
	Description string
}

func (e *OAuthError) Error() string { return e.Code + ": " + e.Description }

// MarshalJSON encodes e as its body, wire.OAuthError.
func (e OAuthError) MarshalJSON() ([]byte, error) {
	return json.Marshal(wire.OAuthError{Code: e.Code, Description: e.Description})
}

// UnmarshalJSON decodes a wire.OAuthError body into e, leaving its status.
func (e *OAuthError) UnmarshalJSON(b []byte) error {
	var w wire.OAuthError
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	e.Code, e.Description = w.Code, w.Description
	return nil
}

func oauthErr(status int, code, format string, args ...any) *OAuthError {
	return &OAuthError{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

// AccessTokenRequest is a parsed, checked token request.
type AccessTokenRequest struct {
	// Scope holds the requested scopes, deduplicated, in request order.
	Scope []string
	// Audience holds the resource and audience values, deduplicated.
	Audience []string
	// ClientID is the client_id parameter, if any.
	ClientID string
	// Task is the task parameter, if any.
	Task string
	// TTL is the ttl parameter (an agentca extension), zero if absent.
	TTL time.Duration
}

// accessClaims are the claims of an RFC 9068 access token.
type accessClaims struct {
	Issuer   string       `json:"iss"`
	Subject  string       `json:"sub"`
	Audience audience     `json:"aud"`
	ClientID string       `json:"client_id"`
	Scope    string       `json:"scope"`
	IssuedAt int64        `json:"iat"`
	Expiry   int64        `json:"exp"`
	ID       string       `json:"jti"`
	Cnf      confirmation `json:"cnf"`
	Task     string       `json:"task,omitempty"`
}

// confirmation binds a token to a certificate (RFC 8705 §3.1).
type confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

// audience is one string when there is one, else an array (RFC 7519).
type audience []string

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// tokenIssuer signs access tokens and holds the published documents.
type tokenIssuer struct {
	opts     TokenOptions
	signer   jose.Signer
	scopes   map[string]bool
	jwks     []byte
	metadata []byte
}

func newTokenIssuer(o TokenOptions) (*tokenIssuer, error) {
	if o.Signer == nil || o.Issuer == "" {
		return nil, errors.New("api: tokens: Signer and Issuer are required")
	}
	pub, ok := o.Signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("api: tokens: the token key must be ECDSA P-256")
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = identity.DefaultAccessTokenTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = identity.DefaultAccessTokenMaxTTL
	}
	if o.DefaultTTL > o.MaxTTL {
		return nil, errors.New("api: tokens: DefaultTTL is above MaxTTL")
	}
	o.Issuer = strings.TrimSuffix(o.Issuer, "/")
	jwk, err := es256JWK(pub)
	if err != nil {
		return nil, err
	}
	opts := (&jose.SignerOptions{}).WithType("at+jwt").WithHeader(jose.HeaderKey("kid"), jwk.KeyID)
	var key any = cryptosigner.Opaque(o.Signer)
	if priv, ok := o.Signer.(*ecdsa.PrivateKey); ok {
		key = priv // signs without the crypto.Signer detour
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("api: tokens: %w", err)
	}
	t := &tokenIssuer{opts: o, signer: signer, scopes: map[string]bool{}}
	for _, s := range o.Scopes {
		t.scopes[s] = true
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}}
	for _, pk := range o.PreviousKeys {
		prev, ok := pk.(*ecdsa.PublicKey)
		if !ok || prev.Curve != elliptic.P256() {
			return nil, errors.New("api: tokens: a previous token key is not ECDSA P-256")
		}
		k, err := es256JWK(prev)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(set.Keys, func(j jose.JSONWebKey) bool { return j.KeyID == k.KeyID }) {
			set.Keys = append(set.Keys, k)
		}
	}
	if t.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	md := map[string]any{
		"issuer":                                     o.Issuer,
		"token_endpoint":                             o.Issuer + "/v1/token",
		"jwks_uri":                                   o.Issuer + "/.well-known/jwks.json",
		"grant_types_supported":                      grantTypes(o.Exchange != nil),
		"response_types_supported":                   []string{},
		"token_endpoint_auth_methods_supported":      []string{"tls_client_auth"},
		"tls_client_certificate_bound_access_tokens": true,
		"scopes_supported":                           append([]string{}, o.Scopes...),
		"access_token_signing_alg_values_supported":  []string{string(jose.ES256)},
	}
	if t.metadata, err = json.Marshal(md); err != nil {
		return nil, err
	}
	return t, nil
}

// es256JWK is pub's JWK, its kid the RFC 7638 thumbprint.
func es256JWK(pub *ecdsa.PublicKey) (jose.JSONWebKey, error) {
	jwk := jose.JSONWebKey{Key: pub, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return jwk, fmt.Errorf("api: tokens: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return jwk, nil
}

// sign makes the compact JWS of c.
func (t *tokenIssuer) sign(c *accessClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := t.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Thumbprint is the RFC 8705 x5t#S256 confirmation of a certificate:
// base64url (no padding) of the SHA-256 of its DER.
func Thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (s *Server) jwksHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "max-age=300, public")
	_, _ = w.Write(s.tokens.jwks)
}

func (s *Server) oauthMetadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300, public")
	_, _ = w.Write(s.tokens.metadata)
}

// writeOAuth writes a token endpoint answer; neither a token nor an error
// about one may be cached (RFC 6749 §5.1).
func writeOAuth(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusServiceUnavailable, []byte(`{"error":"temporarily_unavailable"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// token is POST /v1/token: the client credentials grant, the client
// authenticated by its TLS certificate (RFC 8705 §2, tls_client_auth).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if s.isExchange(r) {
		s.tokenExchange(w, r)
		return
	}
	start := time.Now()
	a := tokenAudit{}
	e := s.issueToken(w, r, &a)
	s.settleToken(w, "token", start, &a, e, func() { s.auditToken(r, &a, e) })
}

// settleToken finishes a token request: the refusal's answer (a token
// was written already), the counters, the audit line (audit) and the
// latency metric.
func (s *Server) settleToken(w http.ResponseWriter, endpoint string, start time.Time, a *tokenAudit, e *OAuthError, audit func()) {
	outcome := "issued"
	if e != nil {
		outcome = e.Code
		countRefusal(w, e.Code)
		writeOAuth(w, e.Status, e)
		s.ops.accessTokens.WithLabelValues("refused").Inc()
	} else {
		s.ops.accessTokens.WithLabelValues("issued").Inc()
	}
	audit()
	prov := a.prov
	if prov == "" {
		prov = "unknown"
	}
	s.metrics.observe(prov, endpoint, outcome, time.Since(start).Seconds())
}

// tokenAudit is what the token audit line reports.
type tokenAudit struct {
	prov, spiffeID, serial, jti, task string
	scope, aud                        []string
	exp                               time.Time
	detail                            string
	// rule and effect are the policy's decision, when there is a policy.
	rule, effect string
}

func (s *Server) auditToken(r *http.Request, a *tokenAudit, e *OAuthError) {
	s.writeTokenAudit(r, "token", a, nil, e)
}

// writeTokenAudit writes the one audit line of a token request (op
// "token" or "token-exchange"), with extra (the exchange's chain) after
// the client.
func (s *Server) writeTokenAudit(r *http.Request, op string, a *tokenAudit, extra []slog.Attr, e *OAuthError) {
	attrs := make([]slog.Attr, 0, 20+len(extra))
	attrs = append(attrs, slog.String("op", op), slog.String("provisioner", a.prov), slog.String("remote", r.RemoteAddr))
	if a.spiffeID != "" {
		attrs = append(attrs, slog.String("spiffe_id", a.spiffeID), slog.String("client_serial", a.serial))
	}
	attrs = append(attrs, extra...)
	if a.task != "" {
		attrs = append(attrs, slog.String("task", a.task))
	}
	// Requested scopes and audiences are caller text until a token is
	// issued for them: a refusal names the long ones by hash only.
	quote := func(v []string) string { return strings.Join(v, " ") }
	if e != nil {
		quote = func(v []string) string {
			q := make([]string, len(v))
			for i, x := range v {
				q[i] = echo(x)
			}
			return strings.Join(q, " ")
		}
	}
	if len(a.scope) > 0 {
		attrs = append(attrs, slog.String("scope", quote(a.scope)))
	}
	if len(a.aud) > 0 {
		attrs = append(attrs, slog.String("aud", quote(a.aud)))
	}
	if a.rule != "" {
		attrs = append(attrs, slog.String("rule", a.rule), slog.String("effect", a.effect))
	}
	if e == nil {
		attrs = append(attrs, slog.String("outcome", "issued"), slog.String("jti", a.jti), slog.String("exp", a.exp.Format(time.RFC3339)))
		s.auditLine(r.Context(), slog.LevelInfo, attrs)
		return
	}
	reason := e.Description
	if a.detail != "" {
		reason = truncate(a.detail, maxReason)
	}
	attrs = append(attrs, slog.String("outcome", "refused"), slog.String("error", e.Code), slog.String("reason", reason))
	s.auditLine(r.Context(), slog.LevelWarn, attrs)
}

// auditLine writes one "audit" line with attrs. The record is made here
// rather than by Logger.LogAttrs, which walks the stack for a source
// position that no handler of the daemon prints.
func (s *Server) auditLine(ctx context.Context, level slog.Level, attrs []slog.Attr) {
	h := s.log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	rec := slog.NewRecord(time.Now(), level, "audit", 0)
	rec.AddAttrs(attrs...)
	_ = h.Handle(ctx, rec)
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, a *tokenAudit) *OAuthError {
	if s.tokens == nil {
		return oauthErr(http.StatusNotFound, OAuthInvalidRequest, "this CA issues no access tokens")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return oauthErr(http.StatusMethodNotAllowed, OAuthInvalidRequest, "use POST")
	}
	// As at renewal: the certificate recorded and unrevoked, an identity
	// the CA would still issue, its provisioner still configured.
	leaf, rec, oe := s.tokenClient(r, a)
	if oe != nil {
		return oe
	}
	req, oe := ParseTokenRequest(w, r, s.tokens.opts.MaxTTL)
	if oe != nil {
		return oe
	}
	a.scope, a.aud = req.Scope, req.Audience
	if req.ClientID != "" && req.ClientID != rec.SPIFFEID {
		return oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "client_id must be the SPIFFE ID of the client certificate")
	}
	// A token's task is its certificate's: ending the task (revoking
	// its certificates) then voids every token that names it.
	if req.Task != "" && req.Task != rec.Task {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "task must be the task the client certificate was issued for")
	}
	a.task = rec.Task
	if oe := s.taskLive(r, a, rec.Task); oe != nil {
		return oe
	}
	for _, sc := range req.Scope {
		if !s.tokens.scopes[sc] {
			return oauthErr(http.StatusBadRequest, OAuthInvalidScope, "unknown scope %s", echo(sc))
		}
	}
	for _, au := range req.Audience {
		if !s.audienceAllowed(au) {
			return oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "resource or audience %s is not allowed", echo(au))
		}
	}
	now := s.now()
	ttl := req.TTL
	if ttl == 0 {
		ttl = s.tokens.opts.DefaultTTL
	}
	d, inForce := s.decide(r, &policy.Input{Endpoint: policy.EndpointToken, Provisioner: rec.Provisioner,
		SPIFFEID: rec.SPIFFEID, DNSNames: rec.DNSNames, TTL: ttl, Scope: req.Scope, Audience: req.Audience, Task: rec.Task})
	if !inForce {
		// Fail closed: without a policy nothing says which client may
		// have which scope, so no client gets any.
		a.rule, a.effect, a.detail = "no-policy", string(policy.Deny), "no runtime policy is configured (policy.file)"
		return oauthErr(http.StatusForbidden, OAuthAccessDenied, "the CA has no runtime policy; it issues no token until one (policy.file) allows it")
	}
	a.rule, a.effect = d.RuleName(), string(d.Effect)
	if d.Err != nil {
		a.detail = d.Err.Error()
	}
	if !d.Allowed {
		return oauthErr(http.StatusForbidden, OAuthAccessDenied, "refused by the CA's policy (rule %q)", d.RuleName())
	}
	if d.MaxTTL > 0 {
		ttl = min(ttl, d.MaxTTL)
	}
	exp := now.Add(ttl).Truncate(time.Second)
	if exp.After(leaf.NotAfter) {
		exp = leaf.NotAfter
	}
	if !exp.After(now) {
		return oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "the client certificate is about to expire; renew it first")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		a.detail = err.Error()
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "cannot make a token id; retry")
	}
	c := &accessClaims{Issuer: s.tokens.opts.Issuer, Subject: rec.SPIFFEID, Audience: req.Audience, ClientID: rec.SPIFFEID,
		Scope: strings.Join(req.Scope, " "), IssuedAt: now.Unix(), Expiry: exp.Unix(),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]), Cnf: confirmation{X5tS256: Thumbprint(leaf.Raw)}, Task: rec.Task}
	tok, err := s.tokens.sign(c)
	if err != nil {
		s.log.Error("signing an access token", "err", err)
		a.detail = err.Error()
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the CA cannot sign tokens right now; retry")
	}
	a.jti, a.exp = c.ID, exp
	expiresIn := int64(exp.Sub(now).Round(time.Second) / time.Second)
	writeOAuth(w, http.StatusOK, wire.AccessTokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: max(expiresIn, 1), Scope: c.Scope})
	return nil
}

// audienceAllowed checks a resource or audience value against the
// configured list, or, with none, requires an https URL or a SPIFFE ID in
// the trust domain.
func (s *Server) audienceAllowed(a string) bool {
	if len(s.tokens.opts.Audiences) > 0 {
		return slices.Contains(s.tokens.opts.Audiences, a)
	}
	if strings.HasPrefix(a, "spiffe://") {
		return strings.HasPrefix(a, "spiffe://"+s.ca.TrustDomain()+"/")
	}
	return strings.HasPrefix(a, "https://")
}

// ParseTokenRequest reads and checks a token request body without
// touching any state: the form encoding and size, grant_type, scope,
// resource (absolute URIs without a fragment, RFC 8707), audience,
// client_id, task and ttl (at most maxTTL). Parameters other than
// resource and audience may appear once; unknown ones are ignored (RFC
// 6749 §3.2). Client secrets and Authorization headers are refused: the
// only client authentication is the TLS certificate.
func ParseTokenRequest(w http.ResponseWriter, r *http.Request, maxTTL time.Duration) (*AccessTokenRequest, *OAuthError) {
	bad := func(format string, args ...any) *OAuthError {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, format, args...)
	}
	form, oe := readTokenForm(w, r)
	if oe != nil {
		return nil, oe
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return nil, bad("grant_type is required")
	default:
		return nil, oauthErr(http.StatusBadRequest, OAuthUnsupportedGrantType, "grant_type %s is not supported; use client_credentials", echo(gt))
	}
	req := &AccessTokenRequest{ClientID: form.Get("client_id"), Task: form.Get("task")}
	if req.Scope, oe = parseScopes(form); oe != nil {
		return nil, oe
	}
	if len(req.Scope) == 0 {
		return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "name at least one scope")
	}
	if req.Audience, req.TTL, oe = parseTargetsTaskTTL(form, req.Task, maxTTL); oe != nil {
		return nil, oe
	}
	return req, nil
}

// parseScopes reads scope: RFC 6749 scope tokens, each kept once, at most
// maxTokenScopes.
func parseScopes(form url.Values) ([]string, *OAuthError) {
	var req struct{ Scope []string }
	for sc := range strings.FieldsSeq(form.Get("scope")) {
		if !validScopeToken(sc) {
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "scope %s has characters RFC 6749 does not allow", echo(sc))
		}
		if !slices.Contains(req.Scope, sc) {
			req.Scope = append(req.Scope, sc)
		}
	}
	if len(req.Scope) > maxTokenScopes {
		return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "at most %d scopes", maxTokenScopes)
	}
	return req.Scope, nil
}

// parseTargetsTaskTTL reads resource (RFC 8707) and audience (each kept
// once, at least one, at most maxTokenAudiences), checks task, and reads
// ttl (1s to maxTTL).
func parseTargetsTaskTTL(form url.Values, task string, maxTTL time.Duration) ([]string, time.Duration, *OAuthError) {
	bad := func(format string, args ...any) *OAuthError {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, format, args...)
	}
	req := struct {
		Audience []string
		Task     string
		TTL      time.Duration
	}{Task: task}
	for _, res := range form["resource"] {
		if !absoluteNoFragment(res) {
			return nil, 0, oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "resource %s is not an absolute URI without a fragment", echo(res))
		}
		if !slices.Contains(req.Audience, res) {
			req.Audience = append(req.Audience, res)
		}
	}
	for _, au := range form["audience"] {
		if au == "" || len(au) > maxAudienceLength || strings.ContainsAny(au, " \t\r\n") {
			return nil, 0, oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "audience %s is empty, too long or has white space", echo(au))
		}
		if !slices.Contains(req.Audience, au) {
			req.Audience = append(req.Audience, au)
		}
	}
	if len(req.Audience) == 0 {
		return nil, 0, oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "name the resource (RFC 8707) or audience the token is for")
	}
	if len(req.Audience) > maxTokenAudiences {
		return nil, 0, oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "at most %d resources and audiences", maxTokenAudiences)
	}
	if req.Task != "" && !ValidTask(req.Task) {
		return nil, 0, bad("task must be 1-128 letters, digits, '.', '_', ':', '/' or '-'")
	}
	if t := form.Get("ttl"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < time.Second || d > maxTTL {
			return nil, 0, bad("ttl %s is not a Go duration between 1s and %s", echo(t), maxTTL)
		}
		req.TTL = d
	}
	return req.Audience, req.TTL, nil
}

func isFormType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded")
}

// validScopeToken: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

// absoluteNoFragment reports whether s is an absolute URI without a
// fragment, at most maxAudienceLength bytes (RFC 8707 §2).
func absoluteNoFragment(s string) bool {
	if len(s) == 0 || len(s) > maxAudienceLength || strings.ContainsAny(s, " \t\r\n#") {
		return false
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || scheme == "" || rest == "" {
		return false
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}
