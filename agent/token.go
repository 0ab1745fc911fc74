package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/agentca/agentca/wire"
)

// TokenRequest asks the CA's token endpoint for an access token bound to
// the presented certificate (docs/tokens.md).
type TokenRequest struct {
	// Scope lists the scopes asked for; at least one.
	Scope []string
	// Resource lists the resources (RFC 8707, absolute URIs) the token is
	// for; Audience other audience values. At least one in all.
	Resource []string
	Audience []string
	// Task, when set, must be the task the certificate was issued for.
	Task string
	// TTL asks for a lifetime; zero means the CA's default.
	TTL time.Duration
}

// Token is an access token from the CA.
type Token struct {
	wire.AccessTokenResponse
	// Expiry is when the token stops working, by the local clock.
	Expiry time.Time `json:"-"`
	// lifetime is the token's whole life, for refresh timing.
	lifetime time.Duration
}

// TokenError is an OAuth error answer of the token endpoint: its HTTP
// status and what the JSON body says. In JSON it is that body,
// wire.OAuthError.
type TokenError struct {
	Status      int
	Code        string
	Description string
}

// MarshalJSON encodes e as its body, wire.OAuthError.
func (e TokenError) MarshalJSON() ([]byte, error) {
	return json.Marshal(wire.OAuthError{Code: e.Code, Description: e.Description})
}

// UnmarshalJSON decodes a wire.OAuthError body into e, leaving its status.
func (e *TokenError) UnmarshalJSON(b []byte) error {
	var w wire.OAuthError
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	e.Code, e.Description = w.Code, w.Description
	return nil
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("agent: token endpoint answered %d %s: %s", e.Status, e.Code, e.Description)
}

// Token obtains an access token bound to cur, presented as the TLS client
// certificate (OAuth 2.0 client credentials with tls_client_auth).
func (c *Client) Token(ctx context.Context, cur *tls.Certificate, req TokenRequest) (*Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Join(req.Scope, " ")}}
	for _, r := range req.Resource {
		form.Add("resource", r)
	}
	for _, a := range req.Audience {
		form.Add("audience", a)
	}
	if req.Task != "" {
		form.Set("task", req.Task)
	}
	if req.TTL > 0 {
		form.Set("ttl", req.TTL.String())
	}
	return c.postToken(ctx, cur, form)
}

// postToken posts form to the token endpoint with cur as the client
// certificate and decodes the answer.
func (c *Client) postToken(ctx context.Context, cur *tls.Certificate, form url.Values) (*Token, error) {
	roots, _ := c.state()
	hc := newHTTPClient(roots, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil })
	defer hc.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/v1/token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	start := time.Now()
	status, body, err := exchange(hc, hreq)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		e := &TokenError{Status: status}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			e.Code, e.Description = "http_error", strings.TrimSpace(string(body))
		}
		return nil, e
	}
	var t Token
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" || !strings.EqualFold(t.TokenType, "Bearer") || t.ExpiresIn <= 0 {
		return nil, fmt.Errorf("agent: the token endpoint's answer is not a bearer token (%v)", err)
	}
	t.lifetime = time.Duration(t.ExpiresIn) * time.Second
	t.Expiry = start.Add(t.lifetime)
	return &t, nil
}

// TokenTransport is an http.RoundTripper for calling services protected by
// agentca access tokens (verify/oauth): it presents the agent's current
// certificate and attaches a token bound to exactly that certificate, for
// the request's audience, fetched from the CA and cached until near its
// expiry.
//
// When the certificate changes (a renewal), connections opened with the
// old one are dropped and tokens are fetched for the new one, so a token
// and the certificate on the connection it travels over always match.
type TokenTransport struct {
	// CA issues the tokens. Required.
	CA *Client
	// Certificate returns the current credentials, e.g. a Source's
	// Current().TLSCertificate. Required.
	Certificate func() *tls.Certificate
	// RootCAs verify the services' server certificates by host name; nil
	// means the system roots. Ignored when TLSConfig is set.
	RootCAs *x509.CertPool
	// TLSConfig, when set, is the base TLS configuration for the services,
	// e.g. a Source's ClientTLSConfig(tlsconfig.AuthorizeID(service)) to
	// verify a service by its SPIFFE ID (agentca certificates name no
	// host). Its client certificate hooks are replaced.
	TLSConfig *tls.Config
	// Scope is asked for in every token. Required.
	Scope []string
	// Audience returns the resource a request's token is for; nil means
	// the request's origin, "https://host[:port]".
	Audience func(*http.Request) (string, error)
	// Task, when set, is named in the token requests.
	Task string
	// SubjectToken, when set, makes every token an exchanged one (RFC
	// 8693, docs/delegation.md): it returns the token this agent received
	// for the request (e.g. oauth.FromContext(r.Context()).Token on a
	// request made with the incoming request's context), which the CA
	// exchanges for a token to the request's audience with this agent
	// added to the chain. A request for which it returns "" fails.
	SubjectToken func(*http.Request) string

	mu     sync.Mutex
	certFP [32]byte
	inner  *http.Transport
	tokens map[string]*Token // by audience, for certFP
}

// refreshBefore is how long before expiry a cached token is replaced: a
// quarter of its lifetime, at most 30 s.
func refreshBefore(t *Token) time.Duration { return min(t.lifetime/4, 30*time.Second) }

// RoundTrip implements http.RoundTripper.
func (t *TokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.CA == nil || t.Certificate == nil || len(t.Scope) == 0 {
		return nil, errors.New("agent: TokenTransport needs CA, Certificate and Scope")
	}
	cert := t.Certificate()
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("agent: no current certificate")
	}
	aud := origin(req.URL)
	if t.Audience != nil {
		var err error
		if aud, err = t.Audience(req); err != nil {
			return nil, err
		}
	}
	subject := ""
	if t.SubjectToken != nil {
		if subject = t.SubjectToken(req); subject == "" {
			return nil, errors.New("agent: TokenTransport: no subject token to exchange for this request")
		}
	}
	inner, tok, err := t.tokenFor(req.Context(), cert, aud, subject)
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := inner.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		t.forget(cacheKey(aud, subject), tok) // refused: fetch another next time
	}
	// A 503 (the service cannot reach the CA's keys or OCSP right now)
	// says nothing about the token: it is kept.
	return resp, err
}

// tokenFor returns the transport pinned to cert and a fresh token for aud
// bound to cert.
func (t *TokenTransport) tokenFor(ctx context.Context, cert *tls.Certificate, aud, subject string) (*http.Transport, *Token, error) {
	fp := sha256.Sum256(cert.Certificate[0])
	t.mu.Lock()
	if t.inner == nil || fp != t.certFP {
		if t.inner != nil {
			t.inner.CloseIdleConnections()
		}
		pinned := cert
		tr := http.DefaultTransport.(*http.Transport).Clone()
		conf := &tls.Config{RootCAs: t.RootCAs, MinVersion: tls.VersionTLS12}
		if t.TLSConfig != nil {
			conf = t.TLSConfig.Clone()
		}
		conf.Certificates, conf.GetCertificate = nil, nil
		// No session resumption across certificates: a TLS 1.3 ticket
		// from a connection made with the old certificate would resume
		// with it (resumption sends no certificate), and the service
		// would see the old certificate beside a token for the new one.
		// Each pinned transport gets its own cache.
		conf.ClientSessionCache = nil
		if t.TLSConfig != nil && t.TLSConfig.ClientSessionCache != nil {
			conf.ClientSessionCache = tls.NewLRUClientSessionCache(0)
		}
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pinned, nil }
		tr.TLSClientConfig = conf
		t.inner, t.certFP, t.tokens = tr, fp, map[string]*Token{}
	}
	inner := t.inner
	key := cacheKey(aud, subject)
	tok := t.tokens[key]
	t.mu.Unlock()
	if tok != nil && time.Until(tok.Expiry) > refreshBefore(tok) {
		return inner, tok, nil
	}
	var err error
	if subject != "" {
		tok, err = t.CA.Exchange(ctx, cert, ExchangeRequest{SubjectToken: subject, Scope: t.Scope, Resource: []string{aud}})
	} else {
		tok, err = t.CA.Token(ctx, cert, TokenRequest{Scope: t.Scope, Resource: []string{aud}, Task: t.Task})
	}
	if err != nil {
		return nil, nil, err
	}
	t.mu.Lock()
	if fp == t.certFP {
		if subject != "" && len(t.tokens) >= maxExchanged {
			clear(t.tokens) // bounded: one entry per subject token seen
		}
		t.tokens[key] = tok
	}
	t.mu.Unlock()
	return inner, tok, nil
}

func (t *TokenTransport) forget(aud string, tok *Token) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tokens[aud] == tok {
		delete(t.tokens, aud)
	}
}

// CloseIdleConnections closes the idle connections to the services.
func (t *TokenTransport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inner != nil {
		t.inner.CloseIdleConnections()
	}
}

// origin is "scheme://host[:port]" of u, the default audience.
func origin(u *url.URL) string { return u.Scheme + "://" + u.Host }
