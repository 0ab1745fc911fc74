package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The token-exchange phase: POST /v1/token with the RFC 8693 grant
// (docs/delegation.md). Each agent w first gets a client-credentials
// token from agent w+1 whose audience is w's SPIFFE ID, then exchanges it
// over and over on its own keep-alive connection for a token to the bench
// resource: a certificate check, an ES256 verification of the subject
// token, a policy decision over the chain and an ES256 signature per
// exchange.

// exchangeTarget is issue 20's target on 2 cores.
const exchangeTarget = 8_000

// runExchangePhase enrolls c agents and has each exchange tokens on its
// own connection for opts.duration.
func runExchangePhase(ctx context.Context, opts options, lg *load, rep *report) error {
	return runAgentPhase(ctx, opts, lg, rep, "token-exchange", "exchange", exchangeTarget, lg.exchangePhase)
}

func (l *load) exchangePhase(ctx context.Context, name string, agents []*agent, dur time.Duration, pprofURL, pprofDir string) *phase {
	ph := &phase{name: name, kind: "token-exchange"}
	c := len(agents)
	clients, closeClients := l.agentClients(ctx, agents)
	defer closeClients()
	u := l.d.https + "/v1/token"
	// Subject tokens: agent w+1's token for agent w.
	reqs := make([][]byte, c)
	for w := range c {
		from := (w + 1) % c
		var tok string
		form := []byte(url.Values{"grant_type": {"client_credentials"}, "scope": {benchScope}, "audience": {agents[w].id}}.Encode())
		if _, err := postForm(ctx, clients[from], u, form, func(b []byte) error {
			var tr struct {
				AccessToken string `json:"access_token"`
			}
			err := json.Unmarshal(b, &tr)
			tok = tr.AccessToken
			return err
		}); err != nil {
			ph.errors++
			logf("token-exchange: the subject token for agent %d: %v", w, err)
			return ph
		}
		body := []byte(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token": {tok}, "subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"resource": {benchResource}}.Encode())
		var err error
		if reqs[w], err = rawRequest(u, formType, body); err != nil {
			ph.errors++
			return ph
		}
	}
	l.keepAliveLoad(ctx, ph, agents, reqs, http.StatusOK, func(w int, b []byte) error {
		return checkExchanged(b, agents[w].cert.Certificate[0], agents[(w+1)%c].id, agents[w].id)
	}, dur, pprofURL, pprofDir)
	return ph
}

// checkExchanged checks an exchanged token: bound to certDER, sub the
// subject, act.sub the actor.
func checkExchanged(b []byte, certDER []byte, sub, actor string) error {
	if err := checkToken(b, certDER); err != nil {
		return err
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(b, &tr)
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tr.AccessToken, ".")[1])
	if err != nil {
		return err
	}
	var claims struct {
		Sub string `json:"sub"`
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return err
	}
	if claims.Sub != sub || claims.Act.Sub != actor {
		return fmt.Errorf("sub %q act %q, want %q and %q", claims.Sub, claims.Act.Sub, sub, actor)
	}
	return nil
}
