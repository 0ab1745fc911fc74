package api

import (
	"maps"
	"net"
	"net/http"
	"regexp"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
)

// Policy is the runtime policy the API applies at /v1/sign, /v1/renew and
// /v1/token: compiled rules and the environment they see.
type Policy struct {
	// Rules decide; nil allows everything (no policy configured).
	Rules *policy.Policy
	// Environment is agentca.json's policy.environment. Each request adds
	// "remote_ip", the caller's address.
	Environment map[string]string
}

// CodePolicyDenied is the error code of a request the runtime policy
// refused.
const CodePolicyDenied = "policy_denied"

// SetPolicy swaps the runtime policy; requests in flight finish with the
// one they started with. Nil removes it.
func (s *Server) SetPolicy(p *Policy) { s.policy.Store(p) }

// taskID is what a task identifier may look like.
var taskID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// ValidTask reports whether s is an acceptable task identifier: 1 to 128
// letters, digits, '.', '_', ':', '/' or '-', starting with a letter or
// digit.
func ValidTask(s string) bool { return taskID.MatchString(s) }

// decide evaluates the policy for in (filling the environment and the
// time) and, with logLine, writes the decision's audit line (the token
// endpoint puts the rule in its own audit line instead). Without a policy
// every request is allowed and nothing is logged.
func (s *Server) decide(r *http.Request, in *policy.Input, logLine bool) policy.Decision {
	p := s.policy.Load()
	if p == nil || p.Rules == nil {
		return policy.Decision{Allowed: true, Effect: policy.Allow}
	}
	env := make(map[string]string, len(p.Environment)+1)
	maps.Copy(env, p.Environment)
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		env["remote_ip"] = host
	}
	in.Environment = env
	in.Now = s.now()
	d := p.Rules.Evaluate(in)
	if !logLine {
		return d
	}
	attrs := []any{"op", "policy", "endpoint", in.Endpoint, "provisioner", in.Provisioner, "spiffe_id", in.SPIFFEID,
		"remote", r.RemoteAddr, "rule", d.RuleName(), "effect", string(d.Effect)}
	if in.Task != "" {
		attrs = append(attrs, "task", in.Task)
	}
	if d.MaxTTL > 0 {
		attrs = append(attrs, "max_ttl", d.MaxTTL.String())
	}
	if d.Allowed {
		s.log.Info("audit", append(attrs, "outcome", "allowed")...)
	} else {
		if d.Err != nil {
			attrs = append(attrs, "reason", d.Err.Error())
		}
		s.log.Warn("audit", append(attrs, "outcome", "denied")...)
	}
	return d
}

// policyDenied is the refusal of a denying decision; the rule is named,
// an evaluation error only in the audit line.
func policyDenied(d policy.Decision) *Error {
	if d.Err != nil {
		return errorf(http.StatusForbidden, CodePolicyDenied, "refused by the CA's policy (rule %q could not be evaluated)", d.RuleName())
	}
	return errorf(http.StatusForbidden, CodePolicyDenied, "refused by the CA's policy (rule %q)", d.RuleName())
}

// applyPolicy decides on a certificate request at endpoint (sign or
// renew) and, when a cap rule matched, lowers req's lifetime limits to the
// cap: the requested lifetime is clamped to it, never refused for it.
// claims are the attestation's facts (nil at renewal).
func (s *Server) applyPolicy(r *http.Request, endpoint string, claims map[string]string, req *ca.Request) *Error {
	if p := s.policy.Load(); p == nil || p.Rules == nil {
		return nil
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = min(req.DefaultTTL, req.MaxTTL)
	}
	d := s.decide(r, &policy.Input{Endpoint: endpoint, Provisioner: req.Provisioner, Claims: claims,
		SPIFFEID: req.SPIFFEID, DNSNames: req.DNSNames, TTL: ttl, Task: req.Task}, true)
	if !d.Allowed {
		return policyDenied(d)
	}
	if c := d.MaxTTL; c > 0 {
		// Zero limits mean the CA's defaults; make them explicit first.
		if req.MaxTTL <= 0 {
			req.MaxTTL = identity.DefaultMaxTTL
		}
		if req.DefaultTTL <= 0 {
			req.DefaultTTL = identity.DefaultLeafTTL
		}
		req.TTL, req.DefaultTTL, req.MaxTTL = min(req.TTL, c), min(req.DefaultTTL, c), min(req.MaxTTL, c)
	}
	return nil
}
