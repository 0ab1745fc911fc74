package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"net/url"
	"strings"
	"time"
)

// Token exchange (RFC 8693, docs/delegation.md): an agent that received
// a token (a user's, or another agent's delegated token) exchanges it for
// a token to call the next hop, for the same subject, with itself added
// to the chain of actors and bound to its own certificate.

// Token types of RFC 8693.
const (
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// ExchangeRequest asks the CA to exchange a subject token.
type ExchangeRequest struct {
	// SubjectToken is the token to exchange. Required.
	SubjectToken string
	// SubjectTokenType is its RFC 8693 type; empty means TokenTypeJWT.
	SubjectTokenType string
	// ActorToken, with ActorTokenType, is the agent's own JWT-SVID or
	// access token, when the CA should see it too; optional.
	ActorToken, ActorTokenType string
	// Scope lists the scopes asked for; empty means the subject's.
	Scope []string
	// Resource and Audience name the next hop; at least one in all. To
	// let the next agent exchange the token in turn, name its SPIFFE ID.
	Resource []string
	Audience []string
	// TTL asks for a lifetime; zero means the CA's default. The token
	// never outlives the subject token or the certificate.
	TTL time.Duration
}

// Exchange exchanges req.SubjectToken for an access token bound to cur,
// presented as the TLS client certificate.
func (c *Client) Exchange(ctx context.Context, cur *tls.Certificate, req ExchangeRequest) (*Token, error) {
	if req.SubjectToken == "" {
		return nil, errors.New("agent: Exchange needs a SubjectToken")
	}
	typ := req.SubjectTokenType
	if typ == "" {
		typ = TokenTypeJWT
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {req.SubjectToken}, "subject_token_type": {typ}}
	if req.ActorToken != "" {
		form.Set("actor_token", req.ActorToken)
		form.Set("actor_token_type", req.ActorTokenType)
	}
	if len(req.Scope) > 0 {
		form.Set("scope", strings.Join(req.Scope, " "))
	}
	for _, r := range req.Resource {
		form.Add("resource", r)
	}
	for _, a := range req.Audience {
		form.Add("audience", a)
	}
	if req.TTL > 0 {
		form.Set("ttl", req.TTL.String())
	}
	return c.postToken(ctx, cur, form)
}

// subjectKey is the cache key of an exchanged token: the audience and
// the subject token's hash.
func subjectKey(aud, subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return aud + "\x00" + string(sum[:])
}

// maxExchanged bounds the tokens a TokenTransport caches.
const maxExchanged = 1024

// cacheKey is a cached token's key: the audience, and the subject
// token's hash for an exchanged one.
func cacheKey(aud, subject string) string {
	if subject == "" {
		return aud
	}
	return subjectKey(aud, subject)
}
