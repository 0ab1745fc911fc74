package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/policy"
)

// Decider is the runtime policy as the Authority consults it: it rules on
// a request before anything is signed. The API's runtime policy
// (api.Policy) implements it.
type Decider interface {
	// Decide rules on in, whose time and lifetime the Authority has
	// filled in. inForce false means no policy is in force: the request
	// is allowed and there is no decision to report.
	Decide(in *policy.Input) (d policy.Decision, inForce bool)
}

// ErrDenied is returned, with the decision, when the runtime policy
// refused a request.
var ErrDenied = errors.New("ca: refused by the runtime policy")

// SetDecider makes d the runtime policy from now on (a reload); requests
// already under way finish with the one they started with. Nil means no
// policy: everything is allowed.
func (a *Authority) SetDecider(d Decider) { a.decider.Store(&d) }

// Decide asks the runtime policy in force about in, filling in.Now when it
// is zero. The API's endpoints that sign nothing (tokens, JWT-SVIDs) ask
// it; certificate requests are decided by IssueDecided. inForce false
// means no policy is in force.
func (a *Authority) Decide(in *policy.Input) (d policy.Decision, inForce bool) {
	return a.decide(*a.decider.Load(), in)
}

func (a *Authority) decide(dec Decider, in *policy.Input) (policy.Decision, bool) {
	if dec == nil {
		return policy.Decision{Allowed: true, Effect: policy.Allow}, false
	}
	if in.Now.IsZero() {
		in.Now = a.now()
	}
	return dec.Decide(in)
}

// IssueDecided is Issue that also returns the runtime policy's decision:
// the policy decides on req first (its claims, task and endpoint, and the
// lifetime it would get); a refusal is ErrDenied and no certificate, and
// a cap lowers the lifetime. The decision is nil when no policy is in
// force and for the CA's own certificates (CAIdentity), which the policy
// does not see.
func (a *Authority) IssueDecided(ctx context.Context, req *Request) (*Issued, *policy.Decision, error) {
	var cap time.Duration
	var dec *policy.Decision
	if !req.CAIdentity {
		ttl, _ := requested(req)
		claims := req.Claims
		if req.PolicyClaims != nil {
			claims = req.PolicyClaims
		}
		d, inForce := a.decide(*a.decider.Load(), &policy.Input{Endpoint: req.Endpoint, Provisioner: req.Provisioner,
			Claims: claims, SPIFFEID: req.SPIFFEID, DNSNames: req.DNSNames, TTL: ttl, Task: req.Task,
			Environment: req.Environment})
		if inForce {
			dec = &d
			if !d.Allowed {
				return nil, dec, fmt.Errorf("%w (rule %q)", ErrDenied, d.RuleName())
			}
			cap = d.MaxTTL
		}
	}
	out, err := a.issue(ctx, req, cap)
	return out, dec, err
}

// requested returns the lifetime req asks for (its TTL, or its default
// within its limit) and that limit (its MaxTTL under the Ceiling), with
// the defaults of package identity for what req leaves out.
func requested(req *Request) (ttl, maxTTL time.Duration) {
	maxTTL = min(req.MaxTTL, identity.Ceiling)
	if maxTTL <= 0 {
		maxTTL = identity.DefaultMaxTTL
	}
	ttl = req.TTL
	if ttl == 0 {
		ttl = req.DefaultTTL
		if ttl == 0 {
			ttl = identity.DefaultLeafTTL
		}
		ttl = min(ttl, maxTTL)
	}
	return ttl, maxTTL
}

// lifetime is the one place a leaf's lifetime is decided: the requested
// one, lowered to the runtime policy's cap when there is one (a cap
// clamps, it does not refuse), within [MinTTL, the limit].
func (a *Authority) lifetime(req *Request, cap time.Duration) (time.Duration, error) {
	ttl, maxTTL := requested(req)
	if cap > 0 {
		ttl, maxTTL = min(ttl, cap), min(maxTTL, cap)
	}
	if ttl < a.minTTL || ttl > maxTTL {
		return 0, fmt.Errorf("%w: %s is outside [%s, %s]", ErrTTL, ttl, a.minTTL, maxTTL)
	}
	return ttl, nil
}
