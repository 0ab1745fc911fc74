package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The token phase: POST /v1/token (OAuth 2.0 client credentials over
// mTLS, docs/tokens.md) by enrolled agents, each on its own keep-alive
// connection, against a runtime policy of a few rules, so that every
// token costs a certificate check, a policy decision and an ES256
// signature.

// tokenTarget is issue 10's target on 2 cores.
const tokenTarget = 10_000

const (
	benchScope    = "tools.read"
	benchResource = "https://tools.bench.example.org"
)

// benchPolicy is what the daemon evaluates per token.
const benchPolicy = `{"rules": [
  {"name": "no-sandbox", "endpoints": ["sign", "renew"], "when": "claims.?namespace.orValue('') == 'sandbox'", "effect": "deny"},
  {"name": "admin-scope-ops-only", "endpoints": ["token"], "when": "'tools.admin' in scope && !spiffe_id.startsWith('spiffe://bench.example.org/ops/')", "effect": "deny"},
  {"name": "office-hours", "endpoints": ["token"], "when": "environment['hours'] == 'office' && (now.getHours('UTC') < 7 || now.getHours('UTC') >= 20)", "effect": "deny"},
  {"name": "task-tokens-short", "endpoints": ["token"], "when": "task != ''", "effect": "cap", "max_ttl": "2m"},
  {"name": "payments-billing-only", "endpoints": ["jwt-svid"], "when": "'https://payments.bench.example.org' in audience && !spiffe_id.startsWith('spiffe://bench.example.org/billing/')", "effect": "deny"},
  {"name": "no-repeat", "endpoints": ["token-exchange"], "when": "spiffe_id in actors", "effect": "deny"},
  {"name": "exchange", "endpoints": ["token-exchange"], "when": "chain_depth <= 4", "effect": "allow"}
]}`

// configureTokens gives the daemon's agentca.json the token scopes and
// the policy above; called before serve.
func configureTokens(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(benchPolicy), 0o600); err != nil {
		return err
	}
	return editConfig(filepath.Join(dir, "agentca.json"), func(c map[string]any) {
		c["tokens"] = map[string]any{"scopes": []string{benchScope, "tools.write", "tools.admin"}, "exchange": map[string]any{}}
		c["policy"] = map[string]any{"file": "policy.json", "environment": map[string]string{"hours": "any"}}
	})
}

// runTokenPhase enrolls c agents and has each ask for tokens on its own
// connection for opts.duration.
func runTokenPhase(ctx context.Context, opts options, lg *load, rep *report) error {
	return runAgentPhase(ctx, opts, lg, rep, "token", "token", tokenTarget, lg.tokenPhase)
}

// runAgentPhase enrolls c agents (opts.renewConc, default 64) for the
// phase kind, runs it, and reports it against target per second; unit
// names what one request gets.
func runAgentPhase(ctx context.Context, opts options, lg *load, rep *report, kind, unit string, target float64,
	run func(ctx context.Context, name string, agents []*agent, dur time.Duration, pprofURL, pprofDir string) *phase) error {
	if !opts.runs(kind) || ctx.Err() != nil {
		return nil
	}
	c := opts.renewConc
	if c == 0 {
		c = 64
	}
	logf("enrolling %d agents for the %s phase", c, kind)
	if err := lg.ensureTokens(ctx, c); err != nil {
		return err
	}
	agents, err := lg.enroll(ctx, c)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	rep.enrolled += len(agents)
	ph := run(ctx, fmt.Sprintf("%s c=%d", kind, c), agents, opts.duration, lg.d.pprofURL, opts.pprofDir)
	logf("%s: %d %ss in %.2fs = %.0f/s (%.0f%% of %.0f/s), p50 %s p99 %s, daemon %.2f cores (%.0f µs per %s), client %.2f cores, %d errors",
		ph.name, ph.ok, unit, ph.elapsed.Seconds(), ph.rate(), 100*ph.rate()/target, target, fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)),
		ph.daemonCPU/ph.elapsed.Seconds(), ph.daemonCPU/max(float64(ph.ok), 1)*1e6, unit, ph.clientCPU/ph.elapsed.Seconds(), ph.errors)
	rep.phases = append(rep.phases, ph)
	return nil
}

// tokenPhase runs the load. The first answer of each worker is checked in
// full (a bearer JWT whose cnf.x5t#S256 is the SHA-256 of the agent's
// certificate); the others must be 200.
func (l *load) tokenPhase(ctx context.Context, name string, agents []*agent, dur time.Duration, pprofURL, pprofDir string) *phase {
	body := []byte(url.Values{"grant_type": {"client_credentials"}, "scope": {benchScope}, "resource": {benchResource}}.Encode())
	return l.sameRequestLoad(ctx, name, "token", "/v1/token", formType, body, agents,
		func(w int, b []byte) error { return checkToken(b, agents[w].cert.Certificate[0]) }, dur, pprofURL, pprofDir)
}

// formType is the token endpoint's request body type.
const formType = "application/x-www-form-urlencoded"

// postForm sends one token request; anything but 200 is an error.
func postForm(ctx context.Context, hc *http.Client, url string, body []byte, check func([]byte) error) (time.Duration, error) {
	return send(ctx, hc, url, formType, http.StatusOK, body, check)
}

// checkToken reads a token response and the JWT's claims (the signature
// is the unit tests' business) and checks the binding to certDER.
func checkToken(b []byte, certDER []byte) error {
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		return err
	}
	parts := strings.Split(tr.AccessToken, ".")
	if len(parts) != 3 || tr.TokenType != "Bearer" || tr.ExpiresIn <= 0 {
		return fmt.Errorf("not a bearer JWT: %.100s", b)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	var claims struct {
		Cnf struct {
			X5t string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return err
	}
	sum := sha256.Sum256(certDER)
	if want := base64.RawURLEncoding.EncodeToString(sum[:]); claims.Cnf.X5t != want {
		return fmt.Errorf("cnf.x5t#S256 %q, want %q", claims.Cnf.X5t, want)
	}
	return nil
}
