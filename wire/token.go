package wire

import "time"

// AccessTokenResponse is a successful answer of the OAuth 2.0 token
// endpoint, POST /v1/token (RFC 6749 §5.1). The request is a form, not
// JSON.
type AccessTokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// OAuthError is the body of a token endpoint error (RFC 6749 §5.2); the
// HTTP status travels beside it.
type OAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// JWTSVIDRequest is the body of POST /v1/jwt-svid.
type JWTSVIDRequest struct {
	Audience []string `json:"audience"`
	// TTL is a Go duration ("5m"); empty means the default.
	TTL string `json:"ttl,omitempty"`
}

// JWTSVIDResponse is a successful POST /v1/jwt-svid answer.
type JWTSVIDResponse struct {
	// Token is the compact JWS.
	Token string `json:"token"`
	// SPIFFEID is its subject: the ID of the certificate that asked.
	SPIFFEID string `json:"spiffe_id"`
	// ExpiresAt is its exp.
	ExpiresAt time.Time `json:"expires_at"`
}
