package daemon

// JWT-SVIDs: the options of the endpoint. The keys follow the trust
// anchors (internal/anchors/jwt.go).

import (
	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
)

// JWTKeyFile is the JWT-SVID key init makes for the first anchor (a file
// CA); serve records it with the active anchor when that has none.
const JWTKeyFile = "keys/jwt.key"

// jwtSVIDOptions are the options of POST /v1/jwt-svid and OIDC discovery.
func jwtSVIDOptions(cfg *config.Config) *api.JWTSVIDOptions {
	def, max := cfg.JWTSVID.TTLs()
	return &api.JWTSVIDOptions{Issuer: cfg.JWTIssuer(), DefaultTTL: def, MaxTTL: max}
}
