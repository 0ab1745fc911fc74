// Package oauth is the relying-service side of agentca's access tokens: a
// net/http middleware that accepts a request only when its caller presents
// both its agentca certificate (over mutual TLS) and an access token that
// agentca issued for that very certificate (RFC 8705 certificate-bound
// tokens), for this service, with the scopes the service requires.
//
// On every request it checks, in order: the peer certificate through a
// verify.Verifier (chain to the bundle, SPIFFE ID authorisation, revocation
// by OCSP or CRL, so revoking the certificate voids every token bound to
// it once the cached status is re-read: within the Verifier's MaxCacheAge,
// or the OCSP response's or CRL's nextUpdate without one); the Authorization: Bearer token, a JWT access token (RFC 9068, typ
// at+jwt) whose ES256 signature verifies against the CA's JWKS (fetched
// and cached); its iss, aud, exp, iat and nbf; its sub (the certificate's
// SPIFFE ID); its cnf.x5t#S256 against the SHA-256 of the certificate on
// this connection; and the scopes. Any failure is a 401 with
// WWW-Authenticate: Bearer error="invalid_token" (a missing token: a bare
// Bearer challenge, RFC 6750 §3.1), or a 403 insufficient_scope; a 503
// with a JSON body when the CA's keys or the certificate's revocation
// status cannot be obtained (retry).
//
// With Options.AllowDelegation it also accepts delegated tokens (RFC 8693
// token exchange): their newest actor (act.sub), not their sub, must be
// the certificate's SPIFFE ID, and Claims exposes the chain. A token that
// names a task is refused once the CA says the task has ended (GET
// /v1/task-status, cached for TaskMaxAge).
//
// It does not issue tokens, introspect them, or keep a deny list: a token
// is void when its certificate is revoked, its task has ended, or it
// expires.
package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/verify"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Defaults for Options fields left zero.
const (
	DefaultLeeway          = 5 * time.Second
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultMaxStaleness bounds how long keys are used while the CA's
	// JWKS cannot be fetched.
	DefaultMaxStaleness = time.Hour
	// minRefetch bounds JWKS fetches caused by unknown key IDs.
	minRefetch = 10 * time.Second
	// maxBackoff bounds the wait between failed fetches.
	maxBackoff = time.Minute
	// fetchTimeout bounds one fetch (metadata and JWKS).
	fetchTimeout = 10 * time.Second
	// maxToken bounds the Authorization header's token.
	maxToken = 8 << 10
	// maxDocument bounds the metadata and JWKS documents read.
	maxDocument = 1 << 20
)

// Options configure a Middleware. Zero values are documented per field.
type Options struct {
	// Verifier checks the peer certificate: chain, SPIFFE ID and
	// revocation status. Required. Its MaxCacheAge bounds how long a
	// revoked certificate's tokens may still be accepted.
	Verifier *verify.Verifier
	// Issuer is the CA's issuer identifier, its public HTTPS URL (the
	// tokens' "iss"). Required.
	Issuer string
	// Audience is this service's resource identifier: tokens must name
	// it in "aud". Required.
	Audience string
	// Scopes must all be granted by the token; empty requires none.
	Scopes []string
	// JWKSURL is where the CA publishes its token keys; empty means the
	// jwks_uri of the Issuer's authorization server metadata (RFC 8414),
	// whose issuer must equal Issuer.
	JWKSURL string
	// HTTPClient fetches the metadata and the JWKS; nil means a client
	// that trusts the Verifier's current anchors, with a 5 s timeout.
	HTTPClient *http.Client
	// RefreshInterval is how long fetched keys are used before they are
	// fetched again; zero means DefaultRefreshInterval. The fetch runs in
	// the background (one at a time, backing off from 1 s to 1 min after
	// failures) while requests keep using the keys held. An unknown key
	// ID fetches sooner (at most every 10 s).
	RefreshInterval time.Duration
	// MaxStaleness is how long after the last successful fetch the keys
	// held are still used when fetching keeps failing; beyond it every
	// token is refused with 503 until a fetch succeeds (a key the CA
	// withdrew must not stay trusted while the CA is unreachable). Zero
	// means DefaultMaxStaleness (1 h); it is raised to RefreshInterval if
	// below.
	MaxStaleness time.Duration
	// Leeway is the clock skew allowed on exp, iat and nbf; zero means
	// DefaultLeeway, negative none.
	Leeway time.Duration
	// Now nil means time.Now.
	Now func() time.Time
	// Logger receives one line per refusal (debug) and key fetch
	// failures (warn); nil discards.
	Logger *slog.Logger
	// AllowDelegation accepts delegated tokens (RFC 8693 token exchange,
	// an "act" claim): the newest actor must be the certificate's SPIFFE
	// ID; Claims.Subject is who it acts for. Off, they are refused.
	AllowDelegation bool
	// TaskStatusURL is where a token's task is checked (a token whose
	// task has ended is refused); empty means Issuer + "/v1/task-status".
	TaskStatusURL string
	// TaskMaxAge is how long a task's status is reused; zero means
	// DefaultTaskMaxAge. Ending a task takes effect within it.
	TaskMaxAge time.Duration
}

// Claims are what an accepted request carries, from FromContext.
type Claims struct {
	// SPIFFEID of the caller: its certificate's; the token's sub, or
	// for a delegated token its newest actor.
	SPIFFEID string
	// Subject is who the token is for: SPIFFEID for a direct token, the
	// chain's subject (a user, or a workload) for a delegated one, with
	// SubjectIssuer who vouches for it (empty: the CA itself).
	Subject       string
	SubjectIssuer string
	// Actors are a delegated token's actors, newest (the caller) first;
	// empty for a direct token.
	Actors []string
	// Token is the raw access token, to exchange it for the next hop
	// (agent.TokenTransport's SubjectToken).
	Token    string
	ClientID string
	Issuer   string
	Audience []string
	Scope    []string
	// Task is the task the caller's certificate was issued for, if any.
	Task     string
	ID       string
	IssuedAt time.Time
	Expiry   time.Time
}

// Error is a refusal. Code is an RFC 6750 error code ("invalid_token",
// "insufficient_scope", "invalid_request"), or empty when the request
// carried no token at all, or "temporarily_unavailable" for a 503 (the
// CA's keys or the certificate's revocation status cannot be obtained;
// that code is only in the JSON body, never in a WWW-Authenticate
// challenge, since RFC 6750 does not define it).
type Error struct {
	Status      int
	Code        string
	Description string
	// Err is the underlying cause, for logs; never sent.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("oauth: %s: %s: %v", e.Code, e.Description, e.Err)
	}
	return fmt.Sprintf("oauth: %s: %s", e.Code, e.Description)
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(desc string, err error) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc, Err: err}
}

// Middleware authenticates requests; it is safe for concurrent use.
type Middleware struct {
	opts Options

	keys  atomic.Pointer[keySet]
	tasks tasks

	fetchMu   sync.Mutex
	inflight  *flight   // the fetch running, if any
	lastFetch time.Time // when the last fetch started
	failures  int       // consecutive failed fetches
	retryAt   time.Time // no fetch before, after a failure
}

type keySet struct {
	keys    map[string]*ecdsa.PublicKey
	fetched time.Time
}

// New checks opts and returns a Middleware. It does not fetch anything;
// call Refresh to fetch the keys before serving.
func New(opts Options) (*Middleware, error) {
	if opts.Verifier == nil || opts.Issuer == "" || opts.Audience == "" {
		return nil, errors.New("oauth: Verifier, Issuer and Audience are required")
	}
	if !strings.HasPrefix(opts.Issuer, "https://") {
		return nil, fmt.Errorf("oauth: Issuer %q must be an https URL", opts.Issuer)
	}
	opts.Issuer = strings.TrimSuffix(opts.Issuer, "/")
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.MaxStaleness <= 0 {
		opts.MaxStaleness = DefaultMaxStaleness
	}
	opts.MaxStaleness = max(opts.MaxStaleness, opts.RefreshInterval)
	switch {
	case opts.Leeway == 0:
		opts.Leeway = DefaultLeeway
	case opts.Leeway < 0:
		opts.Leeway = 0
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TaskStatusURL == "" {
		opts.TaskStatusURL = opts.Issuer + "/v1/task-status"
	}
	if opts.TaskMaxAge <= 0 {
		opts.TaskMaxAge = DefaultTaskMaxAge
	}
	return &Middleware{opts: opts}, nil
}

type ctxKey struct{}

// FromContext returns the claims of the request Wrap accepted, or nil.
func FromContext(ctx context.Context) *Claims {
	c, _ := ctx.Value(ctxKey{}).(*Claims)
	return c
}

// Wrap returns a handler that calls next only for authenticated requests,
// with the Claims in the request's context.
func (m *Middleware) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := m.Authenticate(r)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = invalid("the token was not accepted", err)
			}
			m.opts.Logger.Debug("request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", e)
			m.refuse(w, e)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
	})
}

// refuse writes the RFC 6750 challenge and a JSON body; a 503 (nothing
// wrong with the credentials) has no challenge, only the body and a
// Retry-After.
func (m *Middleware) refuse(w http.ResponseWriter, e *Error) {
	h := w.Header()
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	} else {
		ch := `Bearer realm="` + quote(m.opts.Audience) + `"`
		if e.Code != "" {
			ch += `, error="` + e.Code + `", error_description="` + quote(e.Description) + `"`
		}
		if e.Code == "insufficient_scope" {
			ch += `, scope="` + quote(strings.Join(m.opts.Scopes, " ")) + `"`
		}
		h.Set("WWW-Authenticate", ch)
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	code := e.Code
	if code == "" {
		code = "invalid_request"
	}
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": e.Description})
	_, _ = w.Write(append(b, '\n'))
}

// quote keeps s inside an RFC 6750 quoted string: no '"' or '\', printable
// ASCII only.
func quote(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '\''
		}
		return r
	}, s)
}

// Authenticate runs every check on r and returns the caller's claims, or
// an *Error.
func (m *Middleware) Authenticate(r *http.Request) (*Claims, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, invalid("present your agentca certificate as the TLS client certificate", nil)
	}
	raw, err := bearer(r)
	if err != nil {
		return nil, err
	}
	leaf := r.TLS.PeerCertificates[0]
	id, verr := m.opts.Verifier.VerifyPeer(r.Context(), rawChain(r.TLS), nil)
	if verr != nil {
		if errors.Is(verr, verify.ErrRevoked) {
			return nil, invalid("the client certificate is revoked", verr)
		}
		if errors.Is(verr, verify.ErrStatusUnavailable) {
			// Not the caller's fault, and no verdict on its token:
			// retry later.
			return nil, unavailable("the client certificate's revocation status cannot be established right now; retry", verr)
		}
		return nil, invalid("the client certificate was not accepted", verr)
	}
	c, err := m.verifyToken(r.Context(), raw, leaf)
	if err != nil {
		return nil, err
	}
	if err := m.checkChain(c, id.String()); err != nil {
		return nil, err
	}
	c.SPIFFEID, c.Token = id.String(), raw
	if err := m.checkTask(r.Context(), c); err != nil {
		return nil, err
	}
	for _, s := range m.opts.Scopes {
		if !slices.Contains(c.Scope, s) {
			return nil, &Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: "the token lacks scope " + s}
		}
	}
	return c, nil
}

func rawChain(cs *tls.ConnectionState) [][]byte {
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	return raw
}

// bearer extracts the token of the one Authorization: Bearer header.
func bearer(r *http.Request) (string, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) == 0 {
		return "", &Error{Status: http.StatusUnauthorized, Description: "an access token is required (Authorization: Bearer)"}
	}
	if len(hs) > 1 {
		return "", &Error{Status: http.StatusBadRequest, Code: "invalid_request", Description: "more than one Authorization header"}
	}
	scheme, tok, ok := strings.Cut(hs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", &Error{Status: http.StatusUnauthorized, Description: "the Authorization scheme must be Bearer"}
	}
	tok = strings.TrimSpace(tok)
	if tok == "" || len(tok) > maxToken {
		return "", invalid("the bearer token is empty or too long", nil)
	}
	return tok, nil
}

// accessClaims mirror the CA's RFC 9068 access token.
type accessClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.Audience     `json:"aud"`
	ClientID  string           `json:"client_id"`
	Scope     string           `json:"scope"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	ID        string           `json:"jti"`
	Task      string           `json:"task"`
	Act       json.RawMessage  `json:"act"`
	SubIssuer string           `json:"subject_issuer"`
	Cnf       struct {
		X5tS256 string `json:"x5t#S256"`
	} `json:"cnf"`
}

// verifyToken checks the JWT and its binding to leaf.
func (m *Middleware) verifyToken(ctx context.Context, raw string, leaf *x509.Certificate) (*Claims, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, invalid("the token is not an ES256 JWT", err)
	}
	if len(tok.Headers) != 1 {
		return nil, invalid("the token must have one signature", nil)
	}
	h := tok.Headers[0]
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
		return nil, invalid("the token is not an access token (typ at+jwt)", nil)
	}
	key, err := m.key(ctx, h.KeyID)
	if err != nil {
		return nil, err
	}
	var ac accessClaims
	if err := tok.Claims(key, &ac); err != nil {
		return nil, invalid("the token's signature does not verify", err)
	}
	now := m.opts.Now()
	lw := m.opts.Leeway
	switch {
	case ac.Issuer != m.opts.Issuer:
		return nil, invalid("the token is from another issuer", nil)
	case !slices.Contains([]string(ac.Audience), m.opts.Audience):
		return nil, invalid("the token is not for this service (aud)", nil)
	case ac.Expiry == nil || ac.IssuedAt == nil || ac.Subject == "" || ac.ID == "":
		return nil, invalid("the token lacks exp, iat, sub or jti", nil)
	case !now.Before(ac.Expiry.Time().Add(lw)):
		return nil, invalid("the token has expired", nil)
	case ac.IssuedAt.Time().After(now.Add(lw)):
		return nil, invalid("the token is issued in the future", nil)
	case ac.NotBefore != nil && ac.NotBefore.Time().After(now.Add(lw)):
		return nil, invalid("the token is not valid yet", nil)
	}
	sum := sha256.Sum256(leaf.Raw)
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(ac.Cnf.X5tS256), []byte(want)) != 1 {
		return nil, invalid("the token is bound to another certificate", nil)
	}
	actors, err := parseActors(ac.Act)
	if err != nil {
		return nil, invalid("the token's act claim is malformed", err)
	}
	return &Claims{SPIFFEID: ac.Subject, Subject: ac.Subject, SubjectIssuer: ac.SubIssuer, Actors: actors, ClientID: ac.ClientID, Issuer: ac.Issuer, Audience: ac.Audience,
		Scope: strings.Fields(ac.Scope), Task: ac.Task, ID: ac.ID, IssuedAt: ac.IssuedAt.Time(), Expiry: ac.Expiry.Time()}, nil
}

// key returns the CA's key kid. Keys are served from the cache however
// old, up to MaxStaleness; a cache older than RefreshInterval starts one
// background fetch (single flight, detached from the request, backing off
// after failures) and is used meanwhile. Only a request that cannot be
// answered from the cache (no keys yet, or an unknown kid) waits, for the
// one fetch in flight, never for a fetch of its own.
func (m *Middleware) key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	now := m.opts.Now()
	ks := m.keys.Load()
	if ks != nil {
		age := now.Sub(ks.fetched)
		if age >= m.opts.RefreshInterval {
			m.startFetch(now, false)
		}
		if age >= m.opts.MaxStaleness {
			return nil, unavailable(fmt.Sprintf("the CA's token keys were last fetched %s ago, beyond the %s allowed", age.Round(time.Second), m.opts.MaxStaleness), nil)
		}
		if k := ks.keys[kid]; k != nil {
			return k, nil
		}
	}
	// No keys yet, or an unknown kid (the CA may have rotated its key):
	// wait for a fetch, at most one at a time and, for unknown kids, at
	// most every minRefetch.
	f := m.startFetch(now, ks != nil)
	if f != nil {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, unavailable("the CA's token keys are being fetched", ctx.Err())
		}
	}
	if ks = m.keys.Load(); ks == nil {
		var err error
		if f != nil {
			err = f.err
		}
		return nil, unavailable("the CA's token keys cannot be fetched", err)
	}
	if k := ks.keys[kid]; k != nil {
		return k, nil
	}
	return nil, invalid("the token is signed by an unknown key", nil)
}

func unavailable(desc string, err error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: desc, Err: err}
}

// flight is one JWKS fetch; done is closed when err is set.
type flight struct {
	done chan struct{}
	err  error
}

// startFetch returns the fetch in flight, or starts one unless a failure's
// backoff is running (or, with unknownKid, the last attempt is less than
// minRefetch ago), in which case it returns nil.
func (m *Middleware) startFetch(now time.Time, unknownKid bool) *flight {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()
	if m.inflight != nil {
		return m.inflight
	}
	if now.Before(m.retryAt) || (unknownKid && now.Sub(m.lastFetch) < minRefetch) {
		return nil
	}
	return m.launch(now)
}

// launch starts a fetch; fetchMu is held.
func (m *Middleware) launch(now time.Time) *flight {
	f := &flight{done: make(chan struct{})}
	m.inflight, m.lastFetch = f, now
	go func() {
		// Detached from any request: a caller hanging up must not fail
		// the fetch others wait for.
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		err := m.fetch(ctx)
		cancel()
		m.fetchMu.Lock()
		if err != nil {
			m.failures++
			m.retryAt = m.opts.Now().Add(backoff(m.failures))
			m.opts.Logger.Warn("fetching the CA's token keys failed; using the keys held", "err", err,
				"failures", m.failures, "retry_in", backoff(m.failures))
		} else {
			m.failures, m.retryAt = 0, time.Time{}
		}
		m.inflight = nil
		f.err = err
		m.fetchMu.Unlock()
		close(f.done)
	}()
	return f
}

// backoff is the wait after n consecutive failed fetches: 1 s doubling,
// at most maxBackoff.
func backoff(n int) time.Duration {
	if n > 7 {
		return maxBackoff
	}
	return min(time.Second<<(n-1), maxBackoff)
}

// Refresh fetches the CA's token keys now (and its metadata, when
// JWKSURL is not set), or waits for the fetch in flight.
func (m *Middleware) Refresh(ctx context.Context) error {
	m.fetchMu.Lock()
	f := m.inflight
	if f == nil {
		f = m.launch(m.opts.Now())
	}
	m.fetchMu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Middleware) fetch(ctx context.Context) error {
	hc := m.opts.HTTPClient
	if hc == nil {
		pool := x509.NewCertPool()
		for _, c := range m.opts.Verifier.Roots() {
			pool.AddCert(c)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	jwksURL := m.opts.JWKSURL
	if jwksURL == "" {
		var md struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := getJSON(ctx, hc, m.opts.Issuer+"/.well-known/oauth-authorization-server", &md); err != nil {
			return err
		}
		if md.Issuer != m.opts.Issuer {
			return fmt.Errorf("oauth: the metadata names issuer %q, not %q", md.Issuer, m.opts.Issuer)
		}
		if !strings.HasPrefix(md.JWKSURI, "https://") {
			return fmt.Errorf("oauth: the metadata's jwks_uri %q is not https", md.JWKSURI)
		}
		jwksURL = md.JWKSURI
	}
	var set jose.JSONWebKeySet
	if err := getJSON(ctx, hc, jwksURL, &set); err != nil {
		return err
	}
	ks := &keySet{keys: map[string]*ecdsa.PublicKey{}, fetched: m.opts.Now()}
	for _, k := range set.Keys {
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() || k.KeyID == "" || (k.Use != "" && k.Use != "sig") ||
			(k.Algorithm != "" && k.Algorithm != string(jose.ES256)) {
			continue
		}
		ks.keys[k.KeyID] = pub
	}
	if len(ks.keys) == 0 {
		return errors.New("oauth: the CA's JWKS has no ES256 signing key")
	}
	m.keys.Store(ks)
	return nil
}

func getJSON(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oauth: %s answered %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument))
	if err != nil {
		return fmt.Errorf("oauth: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("oauth: %s: %w", url, err)
	}
	return nil
}
