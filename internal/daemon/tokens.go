package daemon

import (
	"fmt"
	"strings"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/internal/config"
)

// TokenKeyFile is where the access-token signing key lives by default
// (agentca.json keys.token overrides it). serve creates it for a state
// directory older than the token endpoint.
const TokenKeyFile = "keys/token.key"

// tokenOptions loads (or creates) the token key and returns the token
// endpoint's options: the issuer is the public HTTPS URL.
func tokenOptions(cfg *config.Config, keys *caKeys) (*api.TokenOptions, error) {
	key, err := keys.signer(roleToken, true)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", keys.ref(roleToken), err)
	}
	def, max := cfg.Tokens.TTLs()
	return &api.TokenOptions{Signer: key, Issuer: strings.TrimSuffix(cfg.PublicURLs.HTTPS, "/"), DefaultTTL: def, MaxTTL: max,
		Scopes: cfg.Tokens.Scopes, Audiences: cfg.Tokens.Audiences}, nil
}
