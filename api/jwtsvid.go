package api

// JWT-SVIDs (SPIFFE JWT-SVID specification): POST /v1/jwt-svid issues one
// to the holder of an X.509-SVID for its own ID; the signing keys are the
// anchors' JWT keys (Trust.SetJWTKeys), published in /v1/bundle with
// use "jwt-svid" and, for OIDC relying parties, at /v1/jwt-svid/keys
// behind /.well-known/openid-configuration. See docs/jwt-svid.md.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/wire"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// JWTKeysPath is the jwks_uri path: the JWT-SVID keys as a plain JWKS.
const JWTKeysPath = "/v1/jwt-svid/keys"

// CodeJWTKeyUnavailable: the active anchor has no usable JWT-SVID key here.
const CodeJWTKeyUnavailable = "jwt_key_unavailable"

// JWT-SVID request limits.
const (
	maxJWTAudiences = 8
	// DefaultJWTSVIDTTL and DefaultJWTSVIDMaxTTL are a JWT-SVID's
	// lifetime and its ceiling when the configuration names none.
	DefaultJWTSVIDTTL    = identity.DefaultJWTSVIDTTL
	DefaultJWTSVIDMaxTTL = identity.DefaultJWTSVIDMaxTTL
)

// JWTSVIDOptions configure POST /v1/jwt-svid and OIDC discovery.
type JWTSVIDOptions struct {
	// Issuer is every JWT-SVID's "iss" and the discovery document's
	// issuer (jwks_uri is Issuer + JWTKeysPath). Required.
	Issuer string
	// DefaultTTL is a JWT-SVID's lifetime when the request names none
	// (zero: 5 minutes); MaxTTL the ceiling of a requested one (zero: 1
	// hour). A JWT-SVID never outlives the caller's X.509-SVID.
	DefaultTTL, MaxTTL time.Duration
}

// jwtSVIDClaims are a JWT-SVID's claims.
type jwtSVIDClaims struct {
	Issuer   string   `json:"iss"`
	Subject  string   `json:"sub"`
	Audience audience `json:"aud"`
	Expiry   int64    `json:"exp"`
	IssuedAt int64    `json:"iat"`
	ID       string   `json:"jti"`
}

// jwtKeys are the JWT-SVID keys of one Trust: the active signer and the
// published key set.
type jwtKeys struct {
	signer jose.Signer // nil when no key signs here
	kid    string
	jwks   []byte // {"keys":[…]} with use "sig", for jwks_uri
}

// JWTKeyID is the kid of a JWT-SVID key: its RFC 7638 thumbprint.
func JWTKeyID(pub crypto.PublicKey) (string, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return "", errors.New("api: a JWT-SVID key must be ECDSA P-256")
	}
	jwk, err := es256JWK(k)
	return jwk.KeyID, err
}

// SetJWTKeys publishes the JWT-SVID public keys pubs (staged, active and
// retiring anchors') in the bundle and at jwks_uri, and makes active (its
// public key among pubs; nil: none here) the signer. It is called before
// the Trust is shared.
func (t *Trust) SetJWTKeys(pubs []crypto.PublicKey, active crypto.Signer) error {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	sb := t.sb.Clone() // t changes only on success
	for _, p := range pubs {
		k, ok := p.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			return errors.New("api: a JWT-SVID key must be ECDSA P-256")
		}
		jwk, err := es256JWK(k)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(set.Keys, func(j jose.JSONWebKey) bool { return j.KeyID == jwk.KeyID }) {
			continue
		}
		set.Keys = append(set.Keys, jwk)
		if err := sb.AddJWTAuthority(jwk.KeyID, k); err != nil {
			return fmt.Errorf("api: bundle: %w", err)
		}
	}
	bundle, err := sb.Marshal()
	if err != nil {
		return fmt.Errorf("api: encode bundle: %w", err)
	}
	jk := &jwtKeys{}
	if jk.jwks, err = json.Marshal(set); err != nil {
		return err
	}
	if active != nil {
		if jk.kid, err = JWTKeyID(active.Public()); err != nil {
			return err
		}
		if !slices.ContainsFunc(set.Keys, func(j jose.JSONWebKey) bool { return j.KeyID == jk.kid }) {
			return errors.New("api: the active JWT-SVID key is not published")
		}
		var key any = cryptosigner.Opaque(active)
		if priv, ok := active.(*ecdsa.PrivateKey); ok {
			key = priv
		}
		opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), jk.kid)
		if jk.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts); err != nil {
			return fmt.Errorf("api: JWT-SVID signer: %w", err)
		}
	}
	t.Bundle, t.jwt, t.sb = bundle, jk, sb
	return nil
}

// jwtSVIDIssuer holds the configuration and the discovery document.
type jwtSVIDIssuer struct {
	opts      JWTSVIDOptions
	discovery []byte
}

func newJWTSVIDIssuer(o JWTSVIDOptions) (*jwtSVIDIssuer, error) {
	o.Issuer = strings.TrimSuffix(o.Issuer, "/")
	if !strings.HasPrefix(o.Issuer, "https://") || strings.ContainsAny(o.Issuer, "?# ") {
		return nil, fmt.Errorf("api: jwt_svid: issuer %q must be an https URL without query or fragment", o.Issuer)
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultJWTSVIDTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultJWTSVIDMaxTTL
	}
	if o.DefaultTTL > o.MaxTTL {
		return nil, errors.New("api: jwt_svid: default_ttl is above max_ttl")
	}
	d, err := json.Marshal(map[string]any{
		"issuer":                                o.Issuer,
		"jwks_uri":                              o.Issuer + JWTKeysPath,
		"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti"},
	})
	if err != nil {
		return nil, err
	}
	return &jwtSVIDIssuer{opts: o, discovery: d}, nil
}

func (s *Server) openIDConfiguration(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300, public")
	_, _ = w.Write(s.jwt.discovery)
}

func (s *Server) jwtKeysHandler(w http.ResponseWriter, r *http.Request) {
	jk := s.trust.Load().jwt
	w.Header().Set("Content-Type", "application/jwk-set+json")
	// Short: a staged key must reach relying parties before it signs.
	w.Header().Set("Cache-Control", "max-age=60, public")
	if jk == nil {
		_, _ = w.Write([]byte(`{"keys":[]}`))
		return
	}
	_, _ = w.Write(jk.jwks)
}

// jwtAudit is what the JWT-SVID audit line reports.
type jwtAudit struct {
	prov, spiffeID, serial, jti, task, rule, effect, detail string
	aud                                                     []string
	exp                                                     time.Time
}

// jwtSVID is POST /v1/jwt-svid.
func (s *Server) jwtSVID(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	a := jwtAudit{}
	resp, e := s.issueJWTSVID(w, r, &a)
	outcome := "issued"
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs, slog.String("op", "jwt-svid"), slog.String("provisioner", a.prov), slog.String("remote", r.RemoteAddr))
	if a.spiffeID != "" {
		attrs = append(attrs, slog.String("spiffe_id", a.spiffeID), slog.String("client_serial", a.serial))
	}
	if a.task != "" {
		attrs = append(attrs, slog.String("task", a.task))
	}
	if len(a.aud) > 0 {
		attrs = append(attrs, slog.String("aud", strings.Join(a.aud, " ")))
	}
	if a.rule != "" {
		attrs = append(attrs, slog.String("rule", a.rule), slog.String("effect", a.effect))
	}
	if e != nil {
		outcome = e.Code
		reason := e.Message
		if a.detail != "" {
			reason = a.detail
		}
		attrs = append(attrs, slog.String("outcome", "refused"), slog.String("error", e.Code), slog.String("reason", reason))
		s.auditLine(r.Context(), slog.LevelWarn, attrs)
		writeError(w, e)
	} else {
		attrs = append(attrs, slog.String("outcome", "issued"), slog.String("jti", a.jti), slog.String("exp", a.exp.Format(time.RFC3339)))
		s.auditLine(r.Context(), slog.LevelInfo, attrs)
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, resp)
	}
	prov := a.prov
	if prov == "" {
		prov = "unknown"
	}
	s.metrics.observe(prov, "jwt-svid", outcome, time.Since(start).Seconds())
}

// ParseJWTSVIDRequest checks a decoded request: one to eight distinct
// audiences, each 1-512 bytes without white space, and a ttl between 1s
// and maxTTL. It returns the audiences (deduplicated) and the ttl (zero
// when absent).
func ParseJWTSVIDRequest(req *wire.JWTSVIDRequest, maxTTL time.Duration) ([]string, time.Duration, *Error) {
	if len(req.Audience) == 0 {
		return nil, 0, errorf(http.StatusBadRequest, CodeBadRequest, "audience is required: name at least one")
	}
	var aud []string
	for _, au := range req.Audience {
		if au == "" || len(au) > maxAudienceLength || strings.ContainsAny(au, " \t\r\n") {
			return nil, 0, errorf(http.StatusBadRequest, CodeBadRequest, "audience %q is empty, too long or has white space", truncate(au, 128))
		}
		if !slices.Contains(aud, au) {
			aud = append(aud, au)
		}
	}
	if len(aud) > maxJWTAudiences {
		return nil, 0, errorf(http.StatusBadRequest, CodeBadRequest, "at most %d audiences", maxJWTAudiences)
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > maxTTL {
			return nil, 0, errorf(http.StatusBadRequest, CodeBadTTL, "ttl %q is not a Go duration between 1s and %s", truncate(req.TTL, 32), maxTTL)
		}
		ttl = d
	}
	return aud, ttl, nil
}

func (s *Server) issueJWTSVID(w http.ResponseWriter, r *http.Request, a *jwtAudit) (*wire.JWTSVIDResponse, *Error) {
	leaf, rec, e := s.clientCertificate(r)
	if rec != nil {
		a.prov, a.spiffeID, a.serial, a.task = rec.Provisioner, rec.SPIFFEID, rec.Serial, rec.Task
	}
	if e != nil {
		return nil, e
	}
	if (*s.provs.Load())[rec.Provisioner] == nil {
		return nil, errorf(http.StatusForbidden, CodeForbidden, "provisioner %q that vouched for this certificate is no longer configured; enroll again", truncate(rec.Provisioner, 64))
	}
	var req wire.JWTSVIDRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		return nil, e
	}
	aud, ttl, e := ParseJWTSVIDRequest(&req, s.jwt.opts.MaxTTL)
	if e != nil {
		return nil, e
	}
	a.aud = aud
	if _, err := spiffeid.FromString(rec.SPIFFEID); err != nil {
		return nil, errorf(http.StatusForbidden, CodeIdentityNotAllowed, "the client certificate names no SPIFFE ID")
	}
	if ttl == 0 {
		ttl = s.jwt.opts.DefaultTTL
	}
	d, inForce := s.decide(r, &policy.Input{Endpoint: policy.EndpointJWTSVID, Provisioner: rec.Provisioner,
		SPIFFEID: rec.SPIFFEID, DNSNames: rec.DNSNames, TTL: ttl, Audience: aud, Task: rec.Task})
	if inForce {
		a.rule, a.effect = d.RuleName(), string(d.Effect)
	}
	if d.Err != nil {
		a.detail = d.Err.Error()
	}
	if !d.Allowed {
		return nil, policyDenied(d)
	}
	if d.MaxTTL > 0 {
		ttl = min(ttl, d.MaxTTL)
	}
	now := s.now()
	// A JWT-SVID never outlives the X.509-SVID that proved the identity.
	exp := now.Add(ttl)
	if exp.After(leaf.NotAfter) {
		exp = leaf.NotAfter
	}
	exp = exp.Truncate(time.Second)
	if !exp.After(now) {
		return nil, errorf(http.StatusForbidden, CodeCertificateExpired, "the client certificate is about to expire; renew it first")
	}
	jk := s.trust.Load().jwt
	if jk == nil || jk.signer == nil {
		a.detail = "no JWT-SVID signing key is loaded for the active anchor"
		return nil, errorf(http.StatusServiceUnavailable, CodeJWTKeyUnavailable, "the CA has no usable JWT-SVID signing key right now; retry later")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		a.detail = err.Error()
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "cannot make a token id; retry")
	}
	c := &jwtSVIDClaims{Issuer: s.jwt.opts.Issuer, Subject: rec.SPIFFEID, Audience: aud, Expiry: exp.Unix(),
		IssuedAt: now.Unix(), ID: base64.RawURLEncoding.EncodeToString(jti[:])}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, CodeInternal, "cannot encode the claims")
	}
	jws, err := jk.signer.Sign(payload)
	var tok string
	if err == nil {
		tok, err = jws.CompactSerialize()
	}
	if err != nil {
		s.log.Error("signing a JWT-SVID", "err", err)
		a.detail = err.Error()
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA cannot sign JWT-SVIDs right now; retry")
	}
	a.jti, a.exp = c.ID, exp
	return &wire.JWTSVIDResponse{Token: tok, SPIFFEID: rec.SPIFFEID, ExpiresAt: exp.UTC()}, nil
}
