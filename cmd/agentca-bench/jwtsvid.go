package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The jwt-svid phase: POST /v1/jwt-svid (docs/jwt-svid.md) by enrolled
// agents, each on its own keep-alive connection: a certificate check, a
// policy decision (the rules of token.go's benchPolicy; one applies to
// jwt-svid) and an ES256 signature per JWT-SVID.

// jwtSVIDTarget is issue 19's target on 2 cores (as access tokens).
const jwtSVIDTarget = 10_000

const benchJWTAudience = "https://tools.bench.example.org"

// runJWTSVIDPhase enrolls c agents and has each ask for JWT-SVIDs on its
// own connection for opts.duration.
func runJWTSVIDPhase(ctx context.Context, opts options, lg *load, rep *report) error {
	return runAgentPhase(ctx, opts, lg, rep, "jwt-svid", "JWT-SVID", jwtSVIDTarget, lg.jwtSVIDPhase)
}

// jwtSVIDPhase runs the load. The first answer of each worker is checked
// (a JWT for the agent's own SPIFFE ID); the others must be 200.
func (l *load) jwtSVIDPhase(ctx context.Context, name string, agents []*agent, dur time.Duration, pprofURL, pprofDir string) *phase {
	return l.sameRequestLoad(ctx, name, "jwt-svid", "/v1/jwt-svid", "application/json", []byte(`{"audience":["`+benchJWTAudience+`"]}`), agents,
		func(w int, b []byte) error { return checkJWTSVID(b, agents[w].id) }, dur, pprofURL, pprofDir)
}

// checkJWTSVID reads a /v1/jwt-svid answer (the signature is the unit
// tests' business): a compact JWS for id.
func checkJWTSVID(b []byte, id string) error {
	var resp struct {
		Token    string `json:"token"`
		SPIFFEID string `json:"spiffe_id"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return err
	}
	if strings.Count(resp.Token, ".") != 2 || (id != "" && resp.SPIFFEID != id) {
		return fmt.Errorf("not a JWT-SVID for %s: %.100s", id, b)
	}
	return nil
}
