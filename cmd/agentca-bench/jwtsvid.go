package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
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
	ph := &phase{name: name, kind: "jwt-svid"}
	c := len(agents)
	clients, closeClients := l.agentClients(ctx, agents)
	defer closeClients()
	body := []byte(`{"audience":["` + benchJWTAudience + `"]}`)
	u := l.d.https + "/v1/jwt-svid"
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, c, dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 8192)
		hc, a := clients[w], agents[w]
		first := true
		for ctx.Err() == nil && time.Now().Before(deadline) {
			var check func([]byte) error
			if first {
				first = false
				check = func(b []byte) error { return checkJWTSVID(b, a.id) }
			}
			lat, err := send(ctx, hc, u, "application/json", 200, body, check)
			if err != nil {
				if ctx.Err() == nil {
					r.fail(err.Error())
				}
				continue
			}
			r.lat = append(r.lat, lat)
		}
	})
	ph.stopReason = "time"
	return ph
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
