package api

import (
	"maps"
	"net"
	"net/http"
	"regexp"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/policy"
)

// Policy is the runtime policy the CA applies at /v1/sign, /v1/renew,
// /v1/token, /v1/jwt-svid and to workload SVIDs: compiled rules and the
// environment they see. It is the Authority's Decider (ca.Options).
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

// SetPolicy swaps the runtime policy the CA consults (ca.Authority's
// Decider); requests in flight finish with the one they started with. Nil
// removes it.
func (s *Server) SetPolicy(p *Policy) { s.ca.SetDecider(p) }

// taskID is what a task identifier may look like.
var taskID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// ValidTask reports whether s is an acceptable task identifier: 1 to 128
// letters, digits, '.', '_', ':', '/' or '-', starting with a letter or
// digit.
func ValidTask(s string) bool { return taskID.MatchString(s) }

// Decide evaluates the rules on in, which sees the configured environment
// with in.Environment's request facts ("remote_ip") over it. It is the CA's
// Decider (ca.Decider): the Authority asks it at every certificate request,
// and the token and JWT-SVID endpoints through the Authority. A nil policy
// or one without rules is not in force: it allows everything.
func (p *Policy) Decide(in *policy.Input) (d policy.Decision, inForce bool) {
	if p == nil || p.Rules == nil {
		return policy.Decision{Allowed: true, Effect: policy.Allow}, false
	}
	env := make(map[string]string, len(p.Environment)+len(in.Environment))
	maps.Copy(env, p.Environment)
	maps.Copy(env, in.Environment)
	in.Environment = env
	return p.Rules.Evaluate(in), true
}

// callerEnv is the request facts the policy sees beside its configured
// environment: the caller's address as "remote_ip".
func callerEnv(r *http.Request) map[string]string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return map[string]string{"remote_ip": host}
	}
	return nil
}

// decide asks the CA's runtime policy about in (a request that signs
// nothing: a token, a JWT-SVID), with the caller's address and the time
// filled in. inForce false means no policy is in force.
func (s *Server) decide(r *http.Request, in *policy.Input) (d policy.Decision, inForce bool) {
	in.Environment = callerEnv(r)
	in.Now = s.now()
	return s.ca.Decide(in)
}

// auditDecision writes the audit line of the policy's decision on a
// certificate request (the token and JWT-SVID endpoints put the rule in
// their own audit line instead).
func (s *Server) auditDecision(r *http.Request, req *ca.Request, d policy.Decision) {
	attrs := []any{"op", "policy", "endpoint", req.Endpoint, "provisioner", req.Provisioner, "spiffe_id", req.SPIFFEID,
		"remote", r.RemoteAddr, "rule", d.RuleName(), "effect", string(d.Effect)}
	if req.Task != "" {
		attrs = append(attrs, "task", req.Task)
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
}

// policyDenied is the refusal of a denying decision; the rule is named,
// an evaluation error only in the audit line.
func policyDenied(d policy.Decision) *Error {
	if d.Err != nil {
		return errorf(http.StatusForbidden, CodePolicyDenied, "refused by the CA's policy (rule %q could not be evaluated)", d.RuleName())
	}
	return errorf(http.StatusForbidden, CodePolicyDenied, "refused by the CA's policy (rule %q)", d.RuleName())
}

// issue asks the CA for req's certificate at endpoint (sign, renew or
// workload). The CA's runtime policy decides first, seeing the
// attestation's claims (the lineage's at renewal), and a cap rule lowers
// the lifetime the CA computes: the requested lifetime is clamped to it,
// never refused for it. A refusal is the policy's 403 (denied), any other
// failure the CA's error.
func (s *Server) issue(r *http.Request, endpoint string, req *ca.Request) (issued *ca.Issued, denied *Error, err error) {
	req.Endpoint, req.Environment = endpoint, callerEnv(r)
	issued, d, err := s.ca.IssueDecided(r.Context(), req)
	if d != nil {
		s.auditDecision(r, req, *d)
		if !d.Allowed {
			return nil, policyDenied(*d), nil
		}
	}
	return issued, nil, err
}
