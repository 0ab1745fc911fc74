package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/agentca/agentca/wire"
)

// JWTSVID is a JWT-SVID from the CA (POST /v1/jwt-svid, docs/jwt-svid.md):
// the compact JWS, its subject and its expiry.
type JWTSVID = wire.JWTSVIDResponse

// JWTSVID asks the CA for a JWT-SVID for the SPIFFE ID of cur (presented
// as the TLS client certificate), for audience (at least one), living ttl
// (zero: the CA's default, 5 minutes unless configured). The CA caps it
// at jwt_svid.max_ttl and at cur's expiry. Errors from the CA are
// *APIError.
func (c *Client) JWTSVID(ctx context.Context, cur *tls.Certificate, audience []string, ttl time.Duration) (*JWTSVID, error) {
	if len(audience) == 0 {
		return nil, errors.New("agent: a JWT-SVID needs at least one audience")
	}
	roots, _ := c.state()
	hc := newHTTPClient(roots, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur, nil })
	defer hc.CloseIdleConnections()
	return c.jwtSVID(ctx, hc, audience, ttl)
}

// jwtSVID posts the request on hc, whose TLS client certificate is the
// SVID asking.
func (c *Client) jwtSVID(ctx context.Context, hc *http.Client, audience []string, ttl time.Duration) (*JWTSVID, error) {
	body := wire.JWTSVIDRequest{Audience: audience}
	if ttl > 0 {
		body.TTL = ttl.String()
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.String()+"/v1/jwt-svid", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	var out JWTSVID
	if err := c.do(hc, req, &out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, errors.New("agent: the CA's answer has no token")
	}
	return &out, nil
}

// JWTBundle fetches the JWT-SVID keys of trust domain td from the CA's
// SPIFFE bundle (/v1/bundle, the keys with use "jwt-svid").
func (c *Client) JWTBundle(ctx context.Context, td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	body, err := c.get(ctx, "/v1/bundle")
	if err != nil {
		return nil, err
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		return nil, fmt.Errorf("agent: /v1/bundle: %w", err)
	}
	return jwtbundle.FromJWTAuthorities(td, b.JWTAuthorities()), nil
}
