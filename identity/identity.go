// Package identity holds agentca's rules about identities and lifetimes,
// the ones every part of the CA applies alike: what a SPIFFE ID and a
// trust domain may look like, the path reserved for the CA's own
// identities, the longest lifetime any leaf may have and the lifetimes a
// configuration may leave out.
//
// It is a leaf: it imports only the standard library and go-spiffe's
// spiffeid, so the configuration, the signing core, the HTTP API, the
// workload definitions and the clients can all share one copy of the
// rules.
package identity

import "time"

// Ceiling is the longest lifetime any leaf may have, whatever the
// configuration says.
const Ceiling = 24 * time.Hour

// Lifetimes applied when the configuration (or a request) names none.
const (
	// DefaultLeafTTL is a leaf's lifetime when the request names none.
	DefaultLeafTTL = 5 * time.Minute
	// DefaultMaxTTL bounds the lifetime a request may ask for.
	DefaultMaxTTL = time.Hour
	// DefaultMinTTL is the shortest lifetime a request may ask for.
	DefaultMinTTL = time.Minute
	// DefaultTokenTTL is how long a join token stays usable.
	DefaultTokenTTL = 15 * time.Minute
	// DefaultJWTSVIDTTL and DefaultJWTSVIDMaxTTL are a JWT-SVID's
	// lifetime when the request names none and the longest it may ask
	// for. A JWT-SVID never outlives the caller's certificate.
	DefaultJWTSVIDTTL    = 5 * time.Minute
	DefaultJWTSVIDMaxTTL = time.Hour
	// DefaultAccessTokenTTL and DefaultAccessTokenMaxTTL are the same for
	// an OAuth 2.0 access token (/v1/token).
	DefaultAccessTokenTTL    = 5 * time.Minute
	DefaultAccessTokenMaxTTL = time.Hour
)
