package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/policy"
	"github.com/urfave/cli/v2"
)

// policyRequest is the file `agentca policy test --request` reads: the
// variables a rule sees (docs/policy.md).
type policyRequest struct {
	Endpoint    string            `json:"endpoint"`
	Provisioner string            `json:"provisioner"`
	Claims      map[string]string `json:"claims"`
	SPIFFEID    string            `json:"spiffe_id"`
	DNSNames    []string          `json:"dns_names"`
	TTL         string            `json:"ttl"`
	Scope       []string          `json:"scope"`
	Audience    []string          `json:"audience"`
	Task        string            `json:"task"`
	Environment map[string]string `json:"environment"`
	// Now is RFC 3339; empty means the current time.
	Now string `json:"now"`
	// The chain of a token-exchange (docs/delegation.md).
	Subject       string            `json:"subject"`
	SubjectIssuer string            `json:"subject_issuer"`
	SubjectType   string            `json:"subject_type"`
	SubjectClaims map[string]string `json:"subject_claims"`
	Actors        []string          `json:"actors"`
	ChainDepth    int               `json:"chain_depth"`
}

// policyDecision is what --json prints.
type policyDecision struct {
	Allowed bool   `json:"allowed"`
	Rule    string `json:"rule"`
	Effect  string `json:"effect"`
	MaxTTL  string `json:"max_ttl,omitempty"`
	Error   string `json:"error,omitempty"`
}

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "work with the runtime policy (docs/policy.md)",
		Subcommands: []*cli.Command{{
			Name:  "test",
			Usage: "evaluate a request against the policy offline; exit 0 when allowed, 1 when denied",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "request", Usage: "JSON file with the request's variables (endpoint, provisioner, claims, spiffe_id, ttl, scope, audience, task, environment, now)", EnvVars: []string{"AGENTCA_POLICY_REQUEST"}},
				&cli.StringFlag{Name: "dir", Usage: "state directory: use its agentca.json policy section", EnvVars: []string{"AGENTCA_DIR"}},
				&cli.StringFlag{Name: "policy", Usage: "policy file to test instead of the configured one", EnvVars: []string{"AGENTCA_POLICY"}},
				&cli.StringFlag{Name: "default", Usage: "with --policy: the effect when no rule matches, allow or deny", Value: "allow"},
				&cli.BoolFlag{Name: "json", Usage: "print the decision as JSON"},
			},
			Action: policyTest,
		}},
	}
}

func policyTest(c *cli.Context) error {
	if c.String("request") == "" || (c.String("dir") == "") == (c.String("policy") == "") {
		return usagef("give --request, and --dir or --policy")
	}
	var pol *policy.Policy
	env := map[string]string{}
	if c.String("policy") != "" {
		b, err := os.ReadFile(c.String("policy"))
		if err != nil {
			return err
		}
		if pol, err = policy.Parse(b, policy.Effect(c.String("default"))); err != nil {
			return err
		}
	} else {
		dir := c.String("dir")
		cfg, err := config.Load(filepath.Join(dir, config.FileName))
		if err != nil {
			return err
		}
		p, err := daemon.LoadPolicy(dir, cfg)
		if err != nil {
			return err
		}
		if p == nil {
			if pol, err = policy.Compile(policy.File{}, policy.Allow); err != nil {
				return err
			}
		} else {
			pol = p.Rules
			maps.Copy(env, p.Environment)
		}
	}
	b, err := os.ReadFile(c.String("request"))
	if err != nil {
		return err
	}
	var req policyRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return fmt.Errorf("--request %s: %v", c.String("request"), err)
	}
	in := &policy.Input{Endpoint: req.Endpoint, Provisioner: req.Provisioner, Claims: req.Claims, SPIFFEID: req.SPIFFEID,
		DNSNames: req.DNSNames, Scope: req.Scope, Audience: req.Audience, Task: req.Task, Now: time.Now(),
		Subject: req.Subject, SubjectIssuer: req.SubjectIssuer, SubjectType: req.SubjectType, SubjectClaims: req.SubjectClaims,
		Actors: req.Actors, ChainDepth: req.ChainDepth}
	switch req.Endpoint {
	case policy.EndpointSign, policy.EndpointRenew, policy.EndpointToken, policy.EndpointJWTSVID, policy.EndpointWorkload, policy.EndpointTokenExchange:
	default:
		return fmt.Errorf("--request: endpoint must be sign, renew, token, jwt-svid, workload or token-exchange, not %q", req.Endpoint)
	}
	if req.TTL != "" {
		if in.TTL, err = time.ParseDuration(req.TTL); err != nil {
			return fmt.Errorf("--request: ttl %q is not a Go duration", req.TTL)
		}
	}
	if req.Now != "" {
		if in.Now, err = time.Parse(time.RFC3339, req.Now); err != nil {
			return fmt.Errorf("--request: now %q is not RFC 3339", req.Now)
		}
	}
	maps.Copy(env, req.Environment)
	in.Environment = env
	d := pol.Evaluate(in)
	out := policyDecision{Allowed: d.Allowed, Rule: d.RuleName(), Effect: string(d.Effect)}
	if d.MaxTTL > 0 {
		out.MaxTTL = d.MaxTTL.String()
	}
	if d.Err != nil {
		out.Error = d.Err.Error()
	}
	if c.Bool("json") {
		if err := json.NewEncoder(c.App.Writer).Encode(out); err != nil {
			return err
		}
	} else {
		verdict := "deny"
		if d.Allowed {
			verdict = "allow"
		}
		if d.MaxTTL > 0 {
			verdict += ", lifetime capped at " + d.MaxTTL.String()
		}
		fmt.Fprintf(c.App.Writer, "%s (rule %q)\n", verdict, d.RuleName())
		if d.Err != nil {
			fmt.Fprintf(c.App.Writer, "evaluation error: %v\n", d.Err)
		}
	}
	if !d.Allowed {
		return exitCode(1)
	}
	return nil
}
