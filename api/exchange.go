package api

// RFC 8693 token exchange at POST /v1/token: an agent, authenticated by
// its certificate (RFC 8705), presents a subject token (a user's token
// from a trusted identity provider, an access token this CA issued, or a
// JWT-SVID) and gets an RFC 9068 access token for the same subject, with
// itself added to the act chain, bound to its certificate, never wider
// than the subject token. See docs/delegation.md.

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/exchange"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"github.com/go-jose/go-jose/v4"
)

// GrantTypeTokenExchange is RFC 8693's grant type.
const GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// RFC 8693 error codes beside those of token.go.
const (
	OAuthInvalidGrant       = "invalid_grant"
	OAuthUnauthorizedClient = "unauthorized_client"
)

// ExchangeOptions turn on token exchange (TokenOptions.Exchange).
type ExchangeOptions struct {
	// Validator checks subject and actor tokens. Required.
	Validator *exchange.Validator
	// MaxChain is the most actors a token may name; zero means 4.
	MaxChain int
}

// ExchangeRequest is a parsed, checked exchange request.
type ExchangeRequest struct {
	SubjectToken, SubjectTokenType string
	ActorToken, ActorTokenType     string
	// Scope is empty when the request names none (the subject's then).
	Scope    []string
	Audience []string
	ClientID string
	Task     string
	TTL      time.Duration
}

// exchangedClaims are a delegated access token's claims: sub is the
// chain's subject, act the actors (newest outermost), subject_issuer who
// vouches for sub.
type exchangedClaims struct {
	accessClaims
	SubjectIssuer string          `json:"subject_issuer"`
	Act           *exchange.Actor `json:"act"`
}

// exchanger is the exchange's state beside the token issuer's.
type exchanger struct {
	opts ExchangeOptions
	svid atomic.Pointer[svidKeys]
}

// svidKeys caches the JWT-SVID keys parsed from the published JWKS.
type svidKeys struct {
	jwks []byte
	keys *exchange.StaticKeys
}

func newExchanger(o ExchangeOptions) (*exchanger, error) {
	if o.Validator == nil {
		return nil, errors.New("api: token exchange: a Validator is required")
	}
	if o.MaxChain <= 0 {
		o.MaxChain = exchange.DefaultMaxChain
	}
	return &exchanger{opts: o}, nil
}

// TokenKeys returns the CA's access-token keys (the JWKS published at
// /.well-known/jwks.json) for an exchange.Validator.
func (o TokenOptions) TokenKeys() (*exchange.StaticKeys, error) {
	t, err := newTokenIssuer(TokenOptions{Signer: o.Signer, Issuer: o.Issuer, PreviousKeys: o.PreviousKeys})
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(t.jwks, &set); err != nil {
		return nil, err
	}
	return exchange.NewStaticKeys(set)
}

// jwtSVIDKeys are the JWT-SVID keys published now, nil without any.
func (s *Server) jwtSVIDKeys() *exchange.StaticKeys {
	jk := s.trust.Load().jwt
	if s.jwt == nil || jk == nil {
		return nil
	}
	if c := s.exch.svid.Load(); c != nil && bytes.Equal(c.jwks, jk.jwks) {
		return c.keys
	}
	var set jose.JSONWebKeySet
	if json.Unmarshal(jk.jwks, &set) != nil {
		return nil
	}
	keys, err := exchange.NewStaticKeys(set)
	if err != nil {
		return nil
	}
	s.exch.svid.Store(&svidKeys{jwks: jk.jwks, keys: keys})
	return keys
}

// isExchange reports whether r asks for a token exchange, reading at
// most the form's size and leaving the body as it found it for the
// client credentials path.
func (s *Server) isExchange(r *http.Request) bool {
	if s.exch == nil || r.Method != http.MethodPost || !isFormType(r.Header.Get("Content-Type")) || r.Body == nil {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxTokenForm+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	if err != nil || len(b) > maxTokenForm {
		return false
	}
	v, err := url.ParseQuery(string(b))
	if err != nil {
		return false
	}
	// Parsed once: readTokenForm's ParseForm keeps r.PostForm.
	r.PostForm = v
	return len(v["grant_type"]) == 1 && v.Get("grant_type") == GrantTypeTokenExchange
}

// exchangeAudit is what the exchange's audit line reports.
type exchangeAudit struct {
	tokenAudit
	subject, subjectIssuer, subjectType, subjectKind string
	actors                                           []string
}

// tokenExchange is POST /v1/token with the token-exchange grant.
func (s *Server) tokenExchange(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	a := exchangeAudit{}
	e := s.issueExchange(w, r, &a)
	s.settleToken(w, "token-exchange", start, &a.tokenAudit, e, func() { s.auditExchange(r, &a, e) })
}

// auditExchange writes the exchange's one audit line, with the whole
// chain: the subject and its issuer, and the actors, newest first.
func (s *Server) auditExchange(r *http.Request, a *exchangeAudit, e *OAuthError) {
	var chain []slog.Attr
	if a.subject != "" {
		chain = []slog.Attr{slog.String("subject", truncate(a.subject, 256)), slog.String("subject_issuer", truncate(a.subjectIssuer, 256)),
			slog.String("subject_type", a.subjectType), slog.String("subject_token", a.subjectKind),
			slog.String("actors", exchange.Chain(a.actors)), slog.Int("chain_depth", len(a.actors))}
	}
	s.writeTokenAudit(r, "token-exchange", &a.tokenAudit, chain, e)
}

// issueExchange checks the client, the request and the subject token,
// asks the policy, and writes the new token.
func (s *Server) issueExchange(w http.ResponseWriter, r *http.Request, a *exchangeAudit) *OAuthError {
	leaf, rec, oe := s.tokenClient(r, &a.tokenAudit)
	if oe != nil {
		return oe
	}
	req, oe := ParseExchangeRequest(w, r, s.tokens.opts.MaxTTL)
	if oe != nil {
		return oe
	}
	a.scope, a.aud = req.Scope, req.Audience
	if req.ClientID != "" && req.ClientID != rec.SPIFFEID {
		return oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "client_id must be the SPIFFE ID of the client certificate")
	}
	sub, oe := s.validateSubject(r, a, req, rec)
	if oe != nil {
		return oe
	}
	actors := append([]string{rec.SPIFFEID}, sub.Actors...)
	a.actors = actors
	if len(actors) > s.exch.opts.MaxChain {
		a.detail = fmt.Sprintf("the chain would name %d actors; at most %d", len(actors), s.exch.opts.MaxChain)
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the subject_token's chain of actors is already as long as this CA allows (%d)", s.exch.opts.MaxChain)
	}
	task, oe := s.exchangeTask(r, a, req, sub, rec)
	if oe != nil {
		return oe
	}
	scope, oe := s.exchangeScope(req, sub)
	if oe != nil {
		return oe
	}
	a.scope = scope
	for _, au := range req.Audience {
		if !s.audienceAllowed(au) {
			return oauthErr(http.StatusBadRequest, OAuthInvalidTarget, "resource or audience %s is not allowed", echo(au))
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = s.tokens.opts.DefaultTTL
	}
	d, inForce := s.decide(r, &policy.Input{Endpoint: policy.EndpointTokenExchange, Provisioner: rec.Provisioner,
		SPIFFEID: rec.SPIFFEID, DNSNames: rec.DNSNames, TTL: ttl, Scope: scope, Audience: req.Audience, Task: task,
		Subject: sub.Subject, SubjectIssuer: sub.Issuer, SubjectType: sub.Type, SubjectClaims: sub.Claims,
		Actors: sub.Actors, ChainDepth: len(actors)})
	if !inForce {
		// Fail closed, as the client credentials grant does.
		a.rule, a.effect, a.detail = "no-policy", string(policy.Deny), "no runtime policy is configured (policy.file)"
		return oauthErr(http.StatusForbidden, OAuthUnauthorizedClient, "the CA has no runtime policy; it exchanges no token until one (policy.file) allows it")
	}
	a.rule, a.effect = d.RuleName(), string(d.Effect)
	if d.Err != nil {
		a.detail = d.Err.Error()
	}
	if !d.Allowed {
		return oauthErr(http.StatusForbidden, OAuthUnauthorizedClient, "refused by the CA's policy (rule %q)", d.RuleName())
	}
	if d.MaxTTL > 0 {
		ttl = min(ttl, d.MaxTTL)
	}
	now := s.now()
	exp := now.Add(ttl)
	// Never beyond the subject token, never beyond the certificate the
	// new token is bound to.
	exp = minTime(exp, sub.Expiry, leaf.NotAfter).Truncate(time.Second)
	if !exp.After(now) {
		a.detail = "the subject token or the client certificate expires within a second"
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the subject_token (or the client certificate) expires too soon to exchange it")
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		a.detail = err.Error()
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "cannot make a token id; retry")
	}
	c := &exchangedClaims{accessClaims: accessClaims{Issuer: s.tokens.opts.Issuer, Subject: sub.Subject, Audience: req.Audience,
		ClientID: rec.SPIFFEID, Scope: strings.Join(scope, " "), IssuedAt: now.Unix(), Expiry: exp.Unix(),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]), Cnf: confirmation{X5tS256: Thumbprint(leaf.Raw)}, Task: task},
		SubjectIssuer: sub.Issuer, Act: exchange.Nest(actors)}
	tok, err := s.signExchanged(c)
	if err != nil {
		s.log.Error("signing an exchanged access token", "err", err)
		a.detail = err.Error()
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the CA cannot sign tokens right now; retry")
	}
	a.jti, a.exp = c.ID, exp
	expiresIn := int64(exp.Sub(now).Round(time.Second) / time.Second)
	writeOAuth(w, http.StatusOK, wire.ExchangeResponse{AccessToken: tok, IssuedTokenType: exchange.TypeAccessToken,
		TokenType: "Bearer", ExpiresIn: max(expiresIn, 1), Scope: c.Scope})
	return nil
}

func minTime(t time.Time, others ...time.Time) time.Time {
	for _, o := range others {
		if o.Before(t) {
			t = o
		}
	}
	return t
}

func (s *Server) signExchanged(c *exchangedClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := s.tokens.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// tokenClient authenticates the client by its certificate, as the
// client credentials grant does.
func (s *Server) tokenClient(r *http.Request, a *tokenAudit) (*x509.Certificate, *store.Certificate, *OAuthError) {
	leaf, rec, ce := s.clientCertificate(r)
	if rec != nil {
		a.prov, a.spiffeID, a.serial = rec.Provisioner, rec.SPIFFEID, rec.Serial
	}
	if ce != nil {
		if ce.Status >= 500 {
			a.detail = ce.Message
			return nil, nil, oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the CA cannot authenticate clients right now; retry")
		}
		return nil, nil, oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "%s", ce.Message)
	}
	if err := identity.ValidateWorkloadSPIFFEID(rec.SPIFFEID, s.ca.TrustDomain()); err != nil {
		return nil, nil, oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "the client certificate's SPIFFE ID is no longer allowed (%d bytes); enroll again", len(rec.SPIFFEID))
	}
	if (*s.provs.Load())[rec.Provisioner] == nil {
		return nil, nil, oauthErr(http.StatusUnauthorized, OAuthInvalidClient, "provisioner %q that vouched for the client certificate is no longer configured; enroll again", truncate(rec.Provisioner, 64))
	}
	return leaf, rec, nil
}

// validateSubject checks the subject token and, when present, the actor
// token, which must name the caller itself.
func (s *Server) validateSubject(r *http.Request, a *exchangeAudit, req *ExchangeRequest, rec *store.Certificate) (*exchange.Subject, *OAuthError) {
	svid := s.jwtSVIDKeys()
	caller := exchange.Caller{SPIFFEID: rec.SPIFFEID, Thumbprint: Thumbprint(rec.DER)}
	sub, err := s.exch.opts.Validator.Validate(r.Context(), req.SubjectToken, req.SubjectTokenType, caller, svid)
	if oe := tokenRefusal(a, "subject_token", err); oe != nil {
		return nil, oe
	}
	a.subject, a.subjectIssuer, a.subjectType, a.subjectKind = sub.Subject, sub.Issuer, sub.Type, sub.Kind
	if sub.MayAct != "" && sub.MayAct != rec.SPIFFEID {
		a.detail = "may_act names " + truncate(sub.MayAct, 256)
		return nil, oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the subject_token's may_act claim names another actor than the client")
	}
	if req.ActorToken != "" {
		act, err := s.exch.opts.Validator.Validate(r.Context(), req.ActorToken, req.ActorTokenType, caller, svid)
		if oe := tokenRefusal(a, "actor_token", err); oe != nil {
			return nil, oe
		}
		if act.Type != exchange.SubjectWorkload || act.Subject != rec.SPIFFEID || len(act.Actors) > 0 {
			a.detail = "the actor_token is not the client's own token"
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the actor_token must be the client's own JWT-SVID or access token")
		}
	}
	return sub, nil
}

// tokenRefusal maps a Validate error: a refused token is invalid_request
// (RFC 8693 §2.2.2), keys that cannot be fetched a 503.
func tokenRefusal(a *exchangeAudit, param string, err error) *OAuthError {
	if err == nil {
		return nil
	}
	a.detail = param + ": " + err.Error()
	if errors.Is(err, exchange.ErrUnavailable) {
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the %s's issuer keys cannot be fetched right now; retry", param)
	}
	var e *exchange.Error
	if errors.As(err, &e) {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the %s is not acceptable: %s", param, e.Reason)
	}
	return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "the %s is not acceptable", param)
}

// exchangeTask settles the new token's task: the subject token's (a CA
// access token's), else the client certificate's; both set must agree.
// An ended task is an invalid grant.
func (s *Server) exchangeTask(r *http.Request, a *exchangeAudit, req *ExchangeRequest, sub *exchange.Subject, rec *store.Certificate) (string, *OAuthError) {
	task := sub.Task
	if task == "" {
		task = rec.Task
	} else if rec.Task != "" && rec.Task != task {
		a.detail = fmt.Sprintf("subject token task %q, client certificate task %q", sub.Task, rec.Task)
		return "", oauthErr(http.StatusBadRequest, OAuthInvalidGrant, "the subject_token's task is not the client certificate's")
	}
	a.task = task
	if req.Task != "" && req.Task != task {
		return "", oauthErr(http.StatusBadRequest, OAuthInvalidRequest, "task must be the subject_token's task (or the client certificate's)")
	}
	if task == "" {
		return "", nil
	}
	ended, err := s.store.TaskEnded(r.Context(), task)
	if err != nil {
		a.detail = err.Error()
		return "", oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the CA cannot check the task right now; retry")
	}
	if ended {
		a.detail = "the task has ended"
		return "", oauthErr(http.StatusBadRequest, OAuthInvalidGrant, "the task of this chain has ended; no token is issued for it")
	}
	return task, nil
}

// exchangeScope is the new token's scope: the requested scopes, each
// known to the CA and granted by the subject token (when it has a scope
// claim), or without a request the subject's known scopes.
func (s *Server) exchangeScope(req *ExchangeRequest, sub *exchange.Subject) ([]string, *OAuthError) {
	scope := req.Scope
	if len(scope) == 0 {
		if !sub.HasScope {
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "name the scopes: the subject_token has no scope claim")
		}
		for _, sc := range sub.Scope {
			if s.tokens.scopes[sc] && !slices.Contains(scope, sc) {
				scope = append(scope, sc)
			}
		}
		if len(scope) == 0 {
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "the subject_token grants no scope this CA issues")
		}
	}
	for _, sc := range scope {
		if !s.tokens.scopes[sc] {
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "unknown scope %s", echo(sc))
		}
		if sub.Kind != exchange.KindJWTSVID && !slices.Contains(sub.Scope, sc) {
			return nil, oauthErr(http.StatusBadRequest, OAuthInvalidScope, "scope %s is wider than the subject_token's", echo(sc))
		}
	}
	return scope, nil
}
