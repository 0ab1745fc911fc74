package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/agentca/agentca/exchange"
)

// readTokenForm reads a token endpoint body: a form of at most 8 KiB,
// no Authorization header, no client_secret, no repeated parameter other
// than resource and audience (RFC 6749 §3.2).
func readTokenForm(w http.ResponseWriter, r *http.Request) (url.Values, *OAuthError) {
	bad := func(format string, args ...any) *OAuthError {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, format, args...)
	}
	if ct := r.Header.Get("Content-Type"); !isFormType(ct) {
		return nil, bad("the body must be application/x-www-form-urlencoded, not %s", echo(ct))
	}
	if r.Header.Get("Authorization") != "" {
		return nil, bad("authenticate with the TLS client certificate only (tls_client_auth), not an Authorization header")
	}
	if r.ContentLength > maxTokenForm {
		return nil, oauthErr(http.StatusRequestEntityTooLarge, OAuthInvalidRequest, "the body is larger than %d bytes", maxTokenForm)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return nil, oauthErr(http.StatusRequestEntityTooLarge, OAuthInvalidRequest, "the body is larger than %d bytes", maxTokenForm)
		}
		return nil, bad("the body is not a form: %s", jsonProblem(err))
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 && k != "resource" && k != "audience" {
			return nil, bad("parameter %s appears more than once", echo(k))
		}
	}
	if _, ok := form["client_secret"]; ok {
		return nil, bad("authenticate with the TLS client certificate only (tls_client_auth), not a client_secret")
	}
	return form, nil
}

// ParseExchangeRequest reads and checks an RFC 8693 token exchange
// request without touching any state: the form (as readTokenForm),
// grant_type, subject_token and subject_token_type (required),
// actor_token with actor_token_type, requested_token_type (an access
// token, the only type issued), scope (optional: the subject's), resource
// and audience (at least one), client_id, task and ttl.
func ParseExchangeRequest(w http.ResponseWriter, r *http.Request, maxTTL time.Duration) (*ExchangeRequest, *OAuthError) {
	bad := func(format string, args ...any) *OAuthError {
		return oauthErr(http.StatusBadRequest, OAuthInvalidRequest, format, args...)
	}
	form, oe := readTokenForm(w, r)
	if oe != nil {
		return nil, oe
	}
	if gt := form.Get("grant_type"); gt != GrantTypeTokenExchange {
		return nil, oauthErr(http.StatusBadRequest, OAuthUnsupportedGrantType, "grant_type %s is not the token exchange", echo(gt))
	}
	req := &ExchangeRequest{SubjectToken: form.Get("subject_token"), SubjectTokenType: form.Get("subject_token_type"),
		ActorToken: form.Get("actor_token"), ActorTokenType: form.Get("actor_token_type"),
		ClientID: form.Get("client_id"), Task: form.Get("task")}
	if req.SubjectToken == "" || req.SubjectTokenType == "" {
		return nil, bad("subject_token and subject_token_type are required")
	}
	if (req.ActorToken == "") != (req.ActorTokenType == "") {
		return nil, bad("actor_token and actor_token_type go together")
	}
	if len(req.SubjectToken) > exchange.MaxTokenSize || len(req.ActorToken) > exchange.MaxTokenSize {
		return nil, bad("a token is longer than %d bytes", exchange.MaxTokenSize)
	}
	switch rt := form.Get("requested_token_type"); rt {
	case "", exchange.TypeAccessToken, exchange.TypeJWT:
	default:
		return nil, bad("requested_token_type %s is not issued; this CA issues access tokens (JWT)", echo(rt))
	}
	if req.Scope, oe = parseScopes(form); oe != nil {
		return nil, oe
	}
	if req.Audience, req.TTL, oe = parseTargetsTaskTTL(form, req.Task, maxTTL); oe != nil {
		return nil, oe
	}
	return req, nil
}

// grantTypes are the metadata's grant_types_supported.
func grantTypes(exchange bool) []string {
	if exchange {
		return []string{"client_credentials", GrantTypeTokenExchange}
	}
	return []string{"client_credentials"}
}
