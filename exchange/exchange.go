// Package exchange validates the subject and actor tokens of an RFC 8693
// token exchange (docs/delegation.md): a user's token from a trusted
// identity provider, an access token this CA issued, or a JWT-SVID of
// this CA. It checks the signature (go-jose; keys from a JWKS file, a
// JWKS URL or OIDC discovery through go-oidc), the issuer, the audience,
// the times and the act claim, and returns the Subject: who the chain is
// for, who acted so far, the scopes and the lifetime it allows.
//
// The package decides nothing about the exchange itself (scopes, chain
// length, policy): the token endpoint does.
package exchange

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Token types (RFC 8693 §3).
const (
	TypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
)

// Kinds of subject token.
const (
	// KindUser: a token of a configured identity provider.
	KindUser = "user"
	// KindAccessToken: an access token this CA issued.
	KindAccessToken = "access_token"
	// KindJWTSVID: a JWT-SVID this CA issued.
	KindJWTSVID = "jwt_svid"
)

// Subject types, what the chain starts at.
const (
	SubjectUser     = "user"
	SubjectWorkload = "workload"
)

// Limits.
const (
	// MaxTokenSize bounds a subject or actor token.
	MaxTokenSize = 16 << 10
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway = 5 * time.Second
	// maxClaims bounds the string claims handed to the policy.
	maxClaims = 64
	// DefaultMaxChain is the most actors a token may name when the
	// configuration says nothing (tokens.exchange.max_chain).
	DefaultMaxChain = 4
)

// ErrUnavailable marks a failure that is not the token's fault (an
// identity provider's keys cannot be fetched): retry.
var ErrUnavailable = errors.New("exchange: keys unavailable")

// Error is a refused token: Reason is for the audit line, never sent.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Err }

func refuse(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}

// Issuer is a trusted identity provider.
type Issuer struct {
	// Issuer is the tokens' "iss", compared exactly.
	Issuer string
	// Audience must be one of their "aud" values.
	Audience string
	// JWKSFile, JWKSURL: where the keys are; neither means OIDC
	// discovery of Issuer.
	JWKSFile, JWKSURL string
	// Algorithms allowed; empty means RS256 and ES256.
	Algorithms []string
	// HTTPClient, when set, fetches this issuer's keys instead of
	// Config.HTTPClient (e.g. one trusting a private CA).
	HTTPClient *http.Client
}

// Config configures a Validator.
type Config struct {
	// Issuers are the trusted identity providers.
	Issuers []Issuer
	// TokenIssuer is this CA's access-token issuer and TokenKeys its
	// keys (the token key and those being rotated out). Required.
	TokenIssuer string
	TokenKeys   *StaticKeys
	// JWTSVIDIssuer is this CA's JWT-SVID issuer; empty accepts none.
	JWTSVIDIssuer string
	// Dir resolves relative JWKS files.
	Dir string
	// HTTPClient fetches JWKS URLs and discovery documents; nil means a
	// client with a 10 s timeout.
	HTTPClient *http.Client
	// Now nil means time.Now.
	Now func() time.Time
}

type issuer struct {
	Issuer
	algs []jose.SignatureAlgorithm
	keys keySource
}

// Validator checks subject and actor tokens. It is safe for concurrent
// use.
type Validator struct {
	cfg     Config
	issuers map[string]*issuer
	algs    []jose.SignatureAlgorithm // union, for parsing
}

// New checks cfg, reads the JWKS files and returns a Validator. JWKS
// URLs and discovery are fetched at the first token.
func New(cfg Config) (*Validator, error) {
	if cfg.TokenIssuer == "" || cfg.TokenKeys == nil {
		return nil, errors.New("exchange: TokenIssuer and TokenKeys are required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Validator{cfg: cfg, issuers: map[string]*issuer{}, algs: []jose.SignatureAlgorithm{jose.ES256}}
	for _, is := range cfg.Issuers {
		if is.Issuer == "" || is.Audience == "" {
			return nil, errors.New("exchange: an issuer needs issuer and audience")
		}
		if is.Issuer == cfg.TokenIssuer || is.Issuer == cfg.JWTSVIDIssuer || v.issuers[is.Issuer] != nil {
			return nil, fmt.Errorf("exchange: issuer %q is listed twice or is this CA's own", is.Issuer)
		}
		in := &issuer{Issuer: is}
		hc := cfg.HTTPClient
		if is.HTTPClient != nil {
			hc = is.HTTPClient
		}
		names := is.Algorithms
		if len(names) == 0 {
			names = []string{"RS256", "ES256"}
		}
		for _, a := range names {
			alg := jose.SignatureAlgorithm(a)
			if strings.HasPrefix(a, "HS") || a == "none" || a == "" {
				return nil, fmt.Errorf("exchange: issuer %q: algorithm %q is not allowed", is.Issuer, a)
			}
			in.algs = append(in.algs, alg)
			if !slices.Contains(v.algs, alg) {
				v.algs = append(v.algs, alg)
			}
		}
		switch {
		case is.JWKSFile != "":
			p := is.JWKSFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(cfg.Dir, p)
			}
			keys, err := ReadJWKSFile(p)
			if err != nil {
				return nil, fmt.Errorf("exchange: issuer %q: %w", is.Issuer, err)
			}
			in.keys = keys
		case is.JWKSURL != "":
			in.keys = newRemoteKeys(hc, is.JWKSURL, cfg.Now)
		default:
			in.keys = &discoveredKeys{issuer: is.Issuer, hc: hc, now: cfg.Now}
		}
		v.issuers[is.Issuer] = in
	}
	return v, nil
}

// Subject is a validated subject (or actor) token.
type Subject struct {
	// Kind is KindUser, KindAccessToken or KindJWTSVID.
	Kind string
	// Subject is who the chain is for: the user at the identity
	// provider, or a SPIFFE ID.
	Subject string
	// Issuer is who vouches for Subject: the identity provider, this
	// CA's token issuer or its JWT-SVID issuer.
	Issuer string
	// Type is SubjectUser or SubjectWorkload.
	Type string
	// TokenIssuer is the presented token's "iss".
	TokenIssuer string
	// Claims are the presented token's top-level string claims (at most
	// 64), for the policy.
	Claims map[string]string
	// Scope is the token's scope; HasScope is false when it has no
	// scope claim.
	Scope    []string
	HasScope bool
	Audience []string
	Expiry   time.Time
	// Actors are the token's act chain, newest first (CA tokens only).
	Actors []string
	// Task is the task an access token of this CA carries.
	Task string
	// ID is the token's jti.
	ID string
	// Cnf is the x5t#S256 an access token of this CA is bound to.
	Cnf string
	// MayAct is the sub of an identity provider's may_act claim (RFC
	// 8693 §4.4): the only party that may act for the subject; empty
	// without one.
	MayAct string
}

// payload is what the package reads of a token's claims.
type payload struct {
	jwt.Claims
	Scope         *string         `json:"scope"`
	Act           json.RawMessage `json:"act"`
	Task          string          `json:"task"`
	SubjectIssuer string          `json:"subject_issuer"`
	Cnf           *struct {
		X5tS256 string `json:"x5t#S256"`
	} `json:"cnf"`
	MayAct *struct {
		Sub string `json:"sub"`
	} `json:"may_act"`
}

// Caller is the agent presenting a token: its SPIFFE ID and the
// x5t#S256 of its certificate.
type Caller struct {
	SPIFFEID, Thumbprint string
}

// Validate checks raw, presented with tokenType, to the CA by caller.
// svidKeys are the JWT-SVID keys now published (nil: none). Audience
// rules: an identity provider's token must name the configured audience;
// this CA's tokens and JWT-SVIDs must name the caller's SPIFFE ID (they
// were handed to it), or name the CA and be the caller's own (an access
// token bound to its certificate, a JWT-SVID for its SPIFFE ID), so that
// a token lifted from one agent cannot be exchanged by another. An error
// is an *Error (the token is refused) or wraps ErrUnavailable.
func (v *Validator) Validate(ctx context.Context, raw, tokenType string, caller Caller, svidKeys *StaticKeys) (*Subject, error) {
	switch tokenType {
	case TypeJWT, TypeAccessToken, TypeIDToken:
	default:
		return nil, refuse("token type %q is not supported (jwt, access_token or id_token)", trunc(tokenType))
	}
	if raw == "" || len(raw) > MaxTokenSize {
		return nil, refuse("the token is empty or longer than %d bytes", MaxTokenSize)
	}
	// One parse (go-jose, compact serialisation only); the issuer is
	// read before the signature is checked only to choose the keys.
	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		return nil, refuse("not a signed JWT with an accepted algorithm: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, refuse("the token must have exactly one signature")
	}
	// Decoded once; used only after the signature over these very bytes
	// has verified.
	var p payload
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &p); err != nil {
		return nil, refuse("the token's claims do not decode: %v", err)
	}
	peek := &p.Claims
	hdr := jws.Signatures[0].Header
	typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string)
	isAT := strings.EqualFold(typ, "at+jwt") || strings.EqualFold(typ, "application/at+jwt")
	s := &Subject{TokenIssuer: peek.Issuer}
	var keys keySource
	var algs []jose.SignatureAlgorithm
	ownOnly := false // the token names the CA, not the caller: the caller's own only
	audOK := func(aud jwt.Audience) bool {
		if caller.SPIFFEID != "" && aud.Contains(caller.SPIFFEID) {
			return true
		}
		ownOnly = aud.Contains(v.cfg.TokenIssuer)
		return ownOnly
	}
	switch {
	case peek.Issuer == v.cfg.TokenIssuer && isAT:
		s.Kind, keys, algs = KindAccessToken, v.cfg.TokenKeys, []jose.SignatureAlgorithm{jose.ES256}
	case peek.Issuer == v.cfg.JWTSVIDIssuer && v.cfg.JWTSVIDIssuer != "" && !isAT:
		if svidKeys == nil {
			return nil, refuse("no JWT-SVID key is published")
		}
		s.Kind, keys, algs = KindJWTSVID, svidKeys, []jose.SignatureAlgorithm{jose.ES256}
	default:
		in := v.issuers[peek.Issuer]
		if in == nil {
			return nil, refuse("issuer %q is not trusted", trunc(peek.Issuer))
		}
		s.Kind, keys, algs = KindUser, in.keys, in.algs
		audOK = func(aud jwt.Audience) bool { return aud.Contains(in.Audience) }
	}
	if tokenType == TypeAccessToken && s.Kind != KindAccessToken {
		return nil, refuse("subject_token_type access_token names a token this CA did not issue")
	}
	if tokenType == TypeIDToken && s.Kind != KindUser {
		return nil, refuse("subject_token_type id_token names a token of this CA")
	}
	if alg := jose.SignatureAlgorithm(hdr.Algorithm); !slices.Contains(algs, alg) {
		return nil, refuse("algorithm %s is not accepted for issuer %q", alg, trunc(peek.Issuer))
	}
	body, err := keys.verify(ctx, raw, jws)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return nil, &Error{Reason: "the signature does not verify", Err: err}
	}
	if err := v.claims(s, &p, body, audOK); err != nil {
		return nil, err
	}
	if ownOnly && !owned(s, caller) {
		return nil, refuse("a token addressed to the CA may be exchanged only by the agent it was issued to (name the next agent's SPIFFE ID as its audience)")
	}
	return s, nil
}

// owned reports whether s, a token of this CA, is caller's own: an
// access token bound to its certificate, a JWT-SVID for its SPIFFE ID.
func owned(s *Subject, c Caller) bool {
	switch s.Kind {
	case KindAccessToken:
		return c.Thumbprint != "" && subtle.ConstantTimeCompare([]byte(s.Cnf), []byte(c.Thumbprint)) == 1
	case KindJWTSVID:
		return c.SPIFFEID != "" && s.Subject == c.SPIFFEID
	}
	return false
}

// claims checks the verified payload and fills s.
func (v *Validator) claims(s *Subject, p *payload, body []byte, audOK func(jwt.Audience) bool) error {
	now := v.cfg.Now()
	if p.Expiry == nil || p.Subject == "" {
		return refuse("the token has no exp or no sub")
	}
	if err := p.Claims.ValidateWithLeeway(jwt.Expected{Issuer: s.TokenIssuer, Time: now}, Leeway); err != nil {
		if errors.Is(err, jwt.ErrExpired) {
			return refuse("the token expired at %s", p.Expiry.Time().UTC().Format(time.RFC3339))
		}
		return refuse("the token's times or issuer are not valid: %v", err)
	}
	if !audOK(p.Audience) {
		return refuse("the token's audience %q does not name this CA", trunc(strings.Join(p.Audience, " ")))
	}
	s.Subject, s.Audience, s.Expiry, s.ID = p.Subject, p.Audience, p.Expiry.Time(), p.ID
	if p.Scope != nil {
		s.Scope, s.HasScope = strings.Fields(*p.Scope), true
	}
	hasAct := len(p.Act) > 0
	switch s.Kind {
	case KindUser:
		if hasAct {
			return refuse("a token of an identity provider may not carry an act claim (actors are named by this CA only)")
		}
		s.Issuer, s.Type = s.TokenIssuer, SubjectUser
		s.Claims = stringClaims(body)
		if p.MayAct != nil {
			if p.MayAct.Sub == "" {
				return refuse("the may_act claim names no sub")
			}
			s.MayAct = p.MayAct.Sub
		}
	case KindJWTSVID:
		if hasAct {
			return refuse("a JWT-SVID carries no act claim")
		}
		if _, err := spiffeid.FromString(p.Subject); err != nil {
			return refuse("the JWT-SVID's sub is not a SPIFFE ID")
		}
		s.Issuer, s.Type = s.TokenIssuer, SubjectWorkload
	case KindAccessToken:
		if p.Cnf == nil || p.Cnf.X5tS256 == "" || p.Scope == nil {
			return refuse("the access token has no cnf or no scope")
		}
		s.Cnf, s.Task = p.Cnf.X5tS256, p.Task
		if hasAct {
			ids, err := ParseAct(p.Act)
			if err != nil {
				return refuse("%v", err)
			}
			s.Actors = ids
		}
		if err := v.subjectOfAccessToken(s, p.SubjectIssuer); err != nil {
			return err
		}
	}
	return nil
}

// subjectOfAccessToken settles who a CA access token is for: its own
// client (a workload) or, when exchanged, the subject it names with its
// subject_issuer, which must still be trusted.
func (v *Validator) subjectOfAccessToken(s *Subject, subIss string) error {
	switch {
	case subIss == "" || subIss == v.cfg.TokenIssuer:
		if _, err := spiffeid.FromString(s.Subject); err != nil {
			return refuse("the access token's sub is not a SPIFFE ID")
		}
		s.Issuer, s.Type = v.cfg.TokenIssuer, SubjectWorkload
	case subIss == v.cfg.JWTSVIDIssuer:
		s.Issuer, s.Type = subIss, SubjectWorkload
	case v.issuers[subIss] != nil:
		s.Issuer, s.Type = subIss, SubjectUser
	default:
		return refuse("the access token's subject issuer %q is no longer trusted", trunc(subIss))
	}
	return nil
}

// stringClaims returns the top-level string claims of body (at most
// maxClaims, each value at most 1 KiB).
func stringClaims(body []byte) map[string]string {
	var all map[string]json.RawMessage
	if json.Unmarshal(body, &all) != nil {
		return nil
	}
	out := make(map[string]string, min(len(all), maxClaims))
	for k, raw := range all {
		if len(out) == maxClaims {
			break
		}
		var s string
		if json.Unmarshal(raw, &s) == nil && len(s) <= 1024 && len(k) <= 128 {
			out[k] = s
		}
	}
	return out
}

// Thumbprint is a certificate's x5t#S256 (RFC 8705 §3.1).
func Thumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func trunc(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}
