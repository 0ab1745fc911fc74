// Package jwtverify verifies the signed JWTs that the k8s-sa, gcp-iit and
// azure-msi provisioners accept, and returns their claims.
//
// A token is accepted only when all of these hold:
//   - it is a compact JWS (three base64url parts, nothing else: no JSON
//     serialisation, no whitespace, no unprotected headers) of at most
//     MaxTokenSize bytes;
//   - its "alg" is in the provisioner's explicit allow-list ("none" and the
//     HMAC algorithms are never accepted, whatever the list says), and the
//     key named by its "kid" is a public key of the family the algorithm
//     needs (an RSA key never verifies an HS256 or ES256 token: no
//     algorithm confusion);
//   - the signature verifies (go.step.sm/crypto/jose) with that key, taken
//     from the issuer's JWKS (see Keys);
//   - "iss" is exactly one of the accepted issuers, "aud" contains the
//     configured audience, "exp" and "iat" are present, and, with at most
//     Skew of clock skew, the token is not expired, not used before "nbf"
//     and not issued in the future; exp-iat does not exceed MaxLifetime.
//
// Every refusal wraps provisioners.ErrUnauthorized and says why, for the
// audit log. The package does not interpret issuer-specific claims: the
// caller reads them from Token.Claims.
package jwtverify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/agentca/agentca/provisioners"
)

const (
	// MaxTokenSize bounds the token accepted for parsing. Real tokens are
	// 1–3 KB.
	MaxTokenSize = 16 << 10
	// Skew is the clock skew tolerated on exp, nbf and iat.
	Skew = 60 * time.Second
)

// Config configures a Verifier. Issuers, Audience and Algorithms are
// required.
type Config struct {
	// Issuers are the accepted "iss" values, compared exactly.
	Issuers []string
	// Audience must be one of the token's "aud" values.
	Audience string
	// Algorithms is the allow-list of "alg" values, e.g. RS256, ES256.
	// Only RS256/384/512, PS256/384/512 and ES256/384/512 may appear.
	Algorithms []string
	// MaxLifetime bounds exp-iat; zero means no bound.
	MaxLifetime time.Duration
	// Keys are the issuer's verification keys. Nil allows only
	// VerifyClaimsOnly.
	Keys *Keys
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks tokens against one Config. It is safe for concurrent
// use.
type Verifier struct {
	issuers     []string
	audience    string
	algs        []string
	maxLifetime time.Duration
	keys        *Keys
	now         func() time.Time
}

// Token is a verified token.
type Token struct {
	// Algorithm and KeyID are the header's "alg" and "kid".
	Algorithm, KeyID string
	// Issuer, Subject and ID are "iss", "sub" and "jti" (empty if absent).
	Issuer, Subject, ID string
	// Audience is "aud".
	Audience []string
	// Expiry and IssuedAt are "exp" and "iat"; NotBefore is "nbf", zero
	// if absent.
	Expiry, NotBefore, IssuedAt time.Time
	// Claims are all the payload's claims by their exact names.
	Claims Claims
}

// signingAlgs are the algorithms a Config may allow.
var signingAlgs = []string{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512}

// New checks cfg and returns a Verifier.
func New(cfg Config) (*Verifier, error) {
	if len(cfg.Issuers) == 0 || slices.Contains(cfg.Issuers, "") {
		return nil, errors.New("jwtverify: issuers are required and must not be empty")
	}
	if cfg.Audience == "" {
		return nil, errors.New("jwtverify: audience is required")
	}
	if len(cfg.Algorithms) == 0 {
		return nil, errors.New("jwtverify: algorithms are required")
	}
	for _, a := range cfg.Algorithms {
		if !slices.Contains(signingAlgs, a) {
			return nil, fmt.Errorf("jwtverify: algorithm %q may not be allowed", a)
		}
	}
	if cfg.MaxLifetime < 0 {
		return nil, errors.New("jwtverify: negative maximum lifetime")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		issuers: slices.Clone(cfg.Issuers), audience: cfg.Audience, algs: slices.Clone(cfg.Algorithms),
		maxLifetime: cfg.MaxLifetime, keys: cfg.Keys, now: now,
	}, nil
}

// refuse returns an ErrUnauthorized with a detail for the audit log.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", provisioners.ErrUnauthorized, fmt.Sprintf(format, args...))
}

// Verify checks the token's form, algorithm, signature and registered
// claims, and returns it.
func (v *Verifier) Verify(ctx context.Context, token string) (*Token, error) {
	if v.keys == nil {
		return nil, refuse("jwt: no verification keys configured")
	}
	tok, hdr, err := v.parse(token)
	if err != nil {
		return nil, err
	}
	if hdr.KeyID == "" {
		return nil, refuse("jwt: no kid in the header")
	}
	key, err := v.keys.key(ctx, hdr.KeyID, hdr.Algorithm)
	if err != nil {
		return nil, err
	}
	var std jose.Claims
	var claims Claims
	if err := tok.Claims(key.Key, &std, &claims); err != nil {
		if errors.Is(err, jose.ErrCryptoFailure) {
			return nil, refuse("jwt: bad signature (kid %q)", hdr.KeyID)
		}
		return nil, refuse("jwt: signature or claims: %v", err)
	}
	return v.check(hdr, &std, claims)
}

// VerifyClaimsOnly does everything Verify does except checking the
// signature. It is only for a token that another authority authenticates
// before anything it says is trusted (the Kubernetes TokenReview API).
func (v *Verifier) VerifyClaimsOnly(token string) (*Token, error) {
	tok, hdr, err := v.parse(token)
	if err != nil {
		return nil, err
	}
	var std jose.Claims
	var claims Claims
	if err := tok.UnsafeClaimsWithoutVerification(&std, &claims); err != nil {
		return nil, refuse("jwt: claims: %v", err)
	}
	return v.check(hdr, &std, claims)
}

// parse accepts only the compact serialisation with one protected header
// whose algorithm is allowed.
func (v *Verifier) parse(token string) (*jose.JSONWebToken, *jose.Header, error) {
	if token == "" {
		return nil, nil, refuse("jwt: empty token")
	}
	if len(token) > MaxTokenSize {
		return nil, nil, refuse("jwt: token of %d bytes exceeds %d", len(token), MaxTokenSize)
	}
	dots := 0
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return nil, nil, refuse("jwt: not a compact JWS (byte %#02x at %d)", c, i)
		}
	}
	if dots != 2 {
		return nil, nil, refuse("jwt: not a compact JWS (%d parts)", dots+1)
	}
	tok, err := jose.ParseSigned(token)
	if err != nil {
		return nil, nil, refuse("jwt: %v", jose.TrimPrefix(err))
	}
	if len(tok.Headers) != 1 {
		return nil, nil, refuse("jwt: %d signatures", len(tok.Headers))
	}
	hdr := tok.Headers[0]
	if !slices.Contains(v.algs, hdr.Algorithm) {
		return nil, nil, refuse("jwt: algorithm %q not allowed (want one of %v)", hdr.Algorithm, v.algs)
	}
	return tok, &hdr, nil
}

// maxDate is the latest NumericDate accepted (year 9999).
const maxDate = 253402300799

// check verifies the registered claims.
func (v *Verifier) check(hdr *jose.Header, std *jose.Claims, claims Claims) (*Token, error) {
	if !slices.Contains(v.issuers, std.Issuer) {
		return nil, refuse("jwt: issuer %q not accepted", trunc(std.Issuer))
	}
	if !std.Audience.Contains(v.audience) {
		return nil, refuse("jwt: audience %q does not contain %q", truncList(std.Audience), v.audience)
	}
	for _, c := range []struct {
		name string
		d    *jose.NumericDate
		req  bool
	}{{"exp", std.Expiry, true}, {"iat", std.IssuedAt, true}, {"nbf", std.NotBefore, false}} {
		if c.d == nil {
			if c.req {
				return nil, refuse("jwt: no %s", c.name)
			}
			continue
		}
		if *c.d <= 0 || *c.d > maxDate {
			return nil, refuse("jwt: %s out of range", c.name)
		}
	}
	exp, iat, nbf := std.Expiry.Time(), std.IssuedAt.Time(), std.NotBefore.Time()
	now := v.now()
	switch {
	case !exp.After(iat):
		return nil, refuse("jwt: exp %s not after iat %s", exp.UTC().Format(time.RFC3339), iat.UTC().Format(time.RFC3339))
	case std.NotBefore != nil && nbf.After(exp):
		return nil, refuse("jwt: nbf after exp")
	case now.After(exp.Add(Skew)):
		return nil, refuse("jwt: expired at %s", exp.UTC().Format(time.RFC3339))
	case std.NotBefore != nil && now.Add(Skew).Before(nbf):
		return nil, refuse("jwt: not valid before %s", nbf.UTC().Format(time.RFC3339))
	case now.Add(Skew).Before(iat):
		return nil, refuse("jwt: issued in the future (%s)", iat.UTC().Format(time.RFC3339))
	case v.maxLifetime > 0 && exp.Sub(iat) > v.maxLifetime:
		return nil, refuse("jwt: lifetime %s exceeds %s", exp.Sub(iat), v.maxLifetime)
	}
	return &Token{
		Algorithm: hdr.Algorithm, KeyID: hdr.KeyID,
		Issuer: std.Issuer, Subject: std.Subject, ID: std.ID,
		Audience: []string(std.Audience),
		Expiry:   exp.UTC(), IssuedAt: iat.UTC(), NotBefore: zeroOrUTC(std.NotBefore),
		Claims: claims,
	}, nil
}

func zeroOrUTC(d *jose.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time().UTC()
}

// trunc shortens attacker-supplied text for the log.
func trunc(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

func truncList(l []string) string {
	b, _ := json.Marshal(l)
	return trunc(string(b))
}
