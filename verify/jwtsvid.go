package verify

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// JWT-SVIDs (docs/jwt-svid.md). A JWT-SVID is checked against the JWT-SVID
// keys of the CA's SPIFFE bundle: its signature by a published key (kid),
// alg ES256 (or another the SPIFFE spec allows), exp not passed, sub a
// SPIFFE ID, and aud containing the relying service's audience.
//
// Revocation: a JWT-SVID carries no revocation pointer and lives minutes
// (5 by default, jwt_svid.max_ttl at most, never past the X.509-SVID that
// obtained it). Revoking that X.509 certificate stops the holder from
// getting new JWT-SVIDs at once, but those already issued stay valid until
// their exp. A relying service that cannot accept that window should
// require short lifetimes (check exp - iat), use mTLS with verify's
// revocation checks, or use certificate-bound access tokens (verify/oauth).

// ErrNoJWTBundle: no JWT-SVID keys are known yet (the Verifier has no
// BundleURL, or has not fetched it).
var ErrNoJWTBundle = errors.New("verify: no JWT-SVID keys known; configure BundleURL")

// ValidateJWTSVID parses and validates token with go-spiffe's
// jwtsvid.ParseAndValidate against bundles, requiring audience among its
// aud (at least one audience is required).
func ValidateJWTSVID(token string, bundles jwtbundle.Source, audience ...string) (*jwtsvid.SVID, error) {
	if len(audience) == 0 || audience[0] == "" {
		return nil, errors.New("verify: a JWT-SVID audience to require is mandatory")
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundles, audience)
	if err != nil {
		return nil, fmt.Errorf("verify: JWT-SVID: %w", err)
	}
	return svid, nil
}

// GetJWTBundleForTrustDomain implements go-spiffe's jwtbundle.Source with
// the JWT-SVID keys of the bundle last fetched from BundleURL.
func (v *Verifier) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	b := v.jwt.Load()
	if b == nil {
		return nil, ErrNoJWTBundle
	}
	if td != v.td {
		return nil, fmt.Errorf("verify: no JWT-SVID keys for trust domain %q", td)
	}
	return b, nil
}

// ValidateJWTSVID validates token against the CA's JWT-SVID keys (from
// BundleURL; fetched now when none are held yet) for audience, and then
// authorises its subject with Options.Authorize (nil: any ID in the trust
// domain).
func (v *Verifier) ValidateJWTSVID(ctx context.Context, token, audience string) (*jwtsvid.SVID, error) {
	if v.jwt.Load() == nil && v.opts.BundleURL != "" {
		if err := v.Refresh(ctx); err != nil {
			return nil, err
		}
	}
	svid, err := ValidateJWTSVID(token, v, audience)
	if err != nil {
		return nil, err
	}
	if err := v.opts.Authorize(svid.ID, nil); err != nil {
		return nil, fmt.Errorf("verify: JWT-SVID subject %s: %w", svid.ID, err)
	}
	return svid, nil
}
