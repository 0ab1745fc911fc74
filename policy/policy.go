// Package policy is agentca's runtime policy: a file of named rules, each a
// CEL expression over the request (who vouched, the attested claims, the
// SPIFFE ID, the lifetime, the scopes and audiences of a token, the task,
// the environment, the time) with an effect: allow, deny, or allow with the
// lifetime capped. The first rule that matches decides; when none does, the
// configured default does.
//
// Rules are compiled and type-checked once (Parse); a rule that does not
// compile, or is not a boolean, makes the whole file refused with the rule
// named. Evaluation (Policy.Evaluate) touches no state and allocates little:
// one decision costs a few microseconds.
//
// The package does not read files or log; the daemon does (see
// docs/policy.md).
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// Endpoints a rule may apply to.
const (
	EndpointSign  = "sign"
	EndpointRenew = "renew"
	EndpointToken = "token"
	// EndpointJWTSVID is POST /v1/jwt-svid (and, later, the node
	// agent's FetchJWTSVID): Audience holds the JWT-SVID's audiences.
	EndpointJWTSVID = "jwt-svid"
	// EndpointWorkload is a node agent asking for a workload SVID
	// (claims: "node", "node_provisioner", "definition", and each of the
	// workload's selectors as a key with an empty value).
	EndpointWorkload = "workload"
	// EndpointTokenExchange is an RFC 8693 token exchange at /v1/token
	// (docs/delegation.md): the Subject* fields and Actors describe the
	// chain.
	EndpointTokenExchange = "token-exchange"
)

// Endpoints lists every endpoint, the default of a rule without
// "endpoints".
var Endpoints = []string{EndpointSign, EndpointRenew, EndpointToken, EndpointJWTSVID, EndpointWorkload, EndpointTokenExchange}

// Effect is what a matching rule decides.
type Effect string

// Effects.
const (
	// Allow lets the request through with the lifetime it asked for.
	Allow Effect = "allow"
	// Deny refuses the request.
	Deny Effect = "deny"
	// Cap lets the request through with its lifetime lowered to the rule's
	// max_ttl.
	Cap Effect = "cap"
)

// Limits on a policy file; a file beyond them is refused.
const (
	MaxFileSize   = 1 << 20
	MaxRules      = 1000
	MaxExprLength = 4096
	// costLimit bounds one rule's evaluation (CEL's cost units) at run
	// time: a rule that reaches it is an evaluation error (a denial).
	costLimit = 100_000
	// MaxEstimatedCost bounds a rule's worst-case cost as CEL's checker
	// estimates it at compile time, from the input sizes in inputSizes:
	// a rule above it is refused when the policy is loaded, so a rule
	// that could be expensive does not wait for a large request to fail.
	MaxEstimatedCost = costLimit
)

// inputSizes are the sizes the compile-time cost estimate assumes for the
// variables (lists and maps: entries; strings: bytes), generous bounds on
// what a request carries.
var inputSizes = map[string]uint64{
	"endpoint": 8, "provisioner": 128, "spiffe_id": 2048, "task": 128,
	"claims": 64, "claims.@keys": 128, "claims.@values": 2048,
	"dns_names": 100, "dns_names.@items": 253,
	"scope": 32, "scope.@items": 128,
	"audience": 8, "audience.@items": 512,
	"environment": 64, "environment.@keys": 128, "environment.@values": 1024,
	"subject": 1024, "subject_issuer": 512, "subject_type": 8,
	"subject_claims": 64, "subject_claims.@keys": 128, "subject_claims.@values": 1024,
	"actors": 32, "actors.@items": 2048,
}

// sizeEstimator gives the checker the sizes above.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	if max, ok := inputSizes[strings.Join(n.Path(), ".")]; ok {
		return &cost.SizeEstimate{Min: 0, Max: max}
	}
	return nil
}

func (sizeEstimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// Rule is one entry of the policy file.
type Rule struct {
	// Name identifies the rule in errors and audit lines; unique.
	Name string `json:"name"`
	// When is a CEL expression of type bool over the variables of Input.
	When string `json:"when"`
	// Effect is allow, deny or cap.
	Effect Effect `json:"effect"`
	// MaxTTL is the lifetime a cap rule allows at most (a Go duration);
	// only for cap.
	MaxTTL string `json:"max_ttl,omitempty"`
	// Endpoints the rule applies to; empty means all.
	Endpoints []string `json:"endpoints,omitempty"`
}

// File is the policy file: {"rules": [...]}.
type File struct {
	Rules []Rule `json:"rules"`
}

// Input is what a rule sees. Each field is a CEL variable of the same name
// in snake case (see docs/policy.md).
type Input struct {
	// Endpoint is "sign", "renew", "token", "jwt-svid" or "workload".
	Endpoint string
	// Provisioner is the name of the provisioner that vouched for the
	// caller (at renew and token time, the one that vouched for its
	// certificate).
	Provisioner string
	// Claims are the attestation's facts (sign only; empty otherwise).
	Claims   map[string]string
	SPIFFEID string
	DNSNames []string
	// TTL is the lifetime asked for: the certificate's at sign and
	// renew, the token's at token.
	TTL time.Duration
	// Scope and Audience are the token's (token only); Audience is also
	// the JWT-SVID's (jwt-svid).
	Scope    []string
	Audience []string
	// Task is the task id the agent named, or "".
	Task string
	// Environment is the configured policy.environment plus request
	// metadata (see docs/policy.md).
	Environment map[string]string
	Now         time.Time
	// Subject, SubjectIssuer, SubjectType ("user" or "workload") and
	// SubjectClaims describe who a token exchange acts for
	// (token-exchange only).
	Subject       string
	SubjectIssuer string
	SubjectType   string
	SubjectClaims map[string]string
	// Actors are the agents that acted before the caller, newest first
	// (token-exchange only); ChainDepth is the number of actors the new
	// token names, the caller included.
	Actors     []string
	ChainDepth int
}

// Decision is the outcome of Evaluate.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Rule names the rule that decided; empty when the default did.
	Rule string
	// Effect is the deciding rule's effect, or the default's.
	Effect Effect
	// MaxTTL, when not zero, caps the lifetime (a cap rule).
	MaxTTL time.Duration
	// Err is set when the deciding rule failed to evaluate (a missing
	// map key, a cost limit): the request is denied.
	Err error
}

// RuleName is the rule's name, or "default".
func (d Decision) RuleName() string {
	if d.Rule == "" {
		return "default"
	}
	return d.Rule
}

// Policy is a compiled policy file. It is immutable and safe for
// concurrent use.
type Policy struct {
	rules []compiled
	def   Effect
}

type compiled struct {
	Rule
	maxTTL    time.Duration
	endpoints uint8 // bit per endpoint
	prg       cel.Program
}

// RuleError names the rule that could not be compiled and why.
type RuleError struct {
	Index int
	Name  string
	Err   error
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("policy: rule %q (#%d): %v", e.Name, e.Index+1, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

var ruleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// newEnv declares the variables rules see.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("endpoint", cel.StringType),
		cel.Variable("provisioner", cel.StringType),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("spiffe_id", cel.StringType),
		cel.Variable("dns_names", cel.ListType(cel.StringType)),
		cel.Variable("ttl", cel.DurationType),
		cel.Variable("scope", cel.ListType(cel.StringType)),
		cel.Variable("audience", cel.ListType(cel.StringType)),
		cel.Variable("task", cel.StringType),
		cel.Variable("environment", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("subject", cel.StringType),
		cel.Variable("subject_issuer", cel.StringType),
		cel.Variable("subject_type", cel.StringType),
		cel.Variable("subject_claims", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("actors", cel.ListType(cel.StringType)),
		cel.Variable("chain_depth", cel.IntType),
		ext.Strings(),
		cel.OptionalTypes(),
	)
}

// Parse decodes a policy file (JSON, unknown fields refused) and compiles
// every rule; def is the effect when no rule matches ("allow" or "deny").
// An error names the first rule that is wrong (a *RuleError) or the
// problem with the file.
func Parse(data []byte, def Effect) (*Policy, error) {
	if def != Allow && def != Deny {
		return nil, fmt.Errorf("policy: the default must be allow or deny, not %q", def)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("policy: the file is larger than %d bytes", MaxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("policy: not a policy file {\"rules\": [...]}: %v", err)
	}
	if dec.More() {
		return nil, errors.New("policy: trailing data after the JSON object")
	}
	return Compile(f, def)
}

// Compile compiles the rules of f; see Parse.
func Compile(f File, def Effect) (*Policy, error) {
	if def != Allow && def != Deny {
		return nil, fmt.Errorf("policy: the default must be allow or deny, not %q", def)
	}
	if len(f.Rules) > MaxRules {
		return nil, fmt.Errorf("policy: %d rules; at most %d", len(f.Rules), MaxRules)
	}
	env, err := newEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p := &Policy{def: def, rules: make([]compiled, 0, len(f.Rules))}
	seen := map[string]bool{}
	for i, r := range f.Rules {
		c, err := compileRule(env, r)
		if err == nil && seen[r.Name] {
			err = errors.New("a rule with this name comes earlier")
		}
		if err != nil {
			return nil, &RuleError{Index: i, Name: truncate(r.Name, 128), Err: err}
		}
		seen[r.Name] = true
		p.rules = append(p.rules, c)
	}
	return p, nil
}

func compileRule(env *cel.Env, r Rule) (compiled, error) {
	c := compiled{Rule: r}
	if !ruleName.MatchString(r.Name) {
		return c, errors.New("name must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
	}
	switch r.Effect {
	case Allow, Deny:
		if r.MaxTTL != "" {
			return c, fmt.Errorf("max_ttl applies to effect cap only, not %s", r.Effect)
		}
	case Cap:
		d, err := time.ParseDuration(r.MaxTTL)
		if err != nil || d < time.Second {
			return c, fmt.Errorf("effect cap needs max_ttl, a Go duration of at least 1s (got %q)", truncate(r.MaxTTL, 32))
		}
		c.maxTTL = d
	default:
		return c, fmt.Errorf("effect must be allow, deny or cap, not %q", truncate(string(r.Effect), 32))
	}
	if len(r.Endpoints) == 0 {
		c.endpoints = 1<<len(Endpoints) - 1
	}
	for _, e := range r.Endpoints {
		i := slices.Index(Endpoints, e)
		if i < 0 {
			return c, fmt.Errorf("unknown endpoint %q (want %s)", truncate(e, 32), strings.Join(Endpoints, ", "))
		}
		c.endpoints |= 1 << i
	}
	if strings.TrimSpace(r.When) == "" {
		return c, errors.New(`"when" is required (use "true" to match every request)`)
	}
	if len(r.When) > MaxExprLength {
		return c, fmt.Errorf(`"when" is longer than %d bytes`, MaxExprLength)
	}
	ast, iss := env.Compile(r.When)
	if iss != nil && iss.Err() != nil {
		return c, fmt.Errorf("does not compile: %s", oneLine(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return c, fmt.Errorf(`"when" is of type %s, not bool`, ast.OutputType())
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return c, fmt.Errorf("cannot estimate its cost: %s", oneLine(err.Error()))
	}
	if est.Max > MaxEstimatedCost {
		return c, fmt.Errorf("its estimated worst-case cost %d exceeds %d: bound its comprehensions (e.g. test a list's size first, avoid nesting them over request lists)", est.Max, MaxEstimatedCost)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(costLimit))
	if err != nil {
		return c, fmt.Errorf("does not compile: %s", oneLine(err.Error()))
	}
	c.prg = prg
	return c, nil
}

// Default returns the effect when no rule matches.
func (p *Policy) Default() Effect { return p.def }

// Len returns the number of rules.
func (p *Policy) Len() int { return len(p.rules) }

// Evaluate applies the rules to in, in order; the first whose endpoints
// include in.Endpoint and whose expression is true decides. A rule whose
// evaluation fails decides too: it denies (fail closed), with Err set.
func (p *Policy) Evaluate(in *Input) Decision {
	bit := uint8(0)
	if i := slices.Index(Endpoints, in.Endpoint); i >= 0 {
		bit = 1 << i
	}
	act := &activation{in: in}
	for i := range p.rules {
		r := &p.rules[i]
		if r.endpoints&bit == 0 {
			continue
		}
		out, _, err := r.prg.Eval(act)
		if err != nil {
			return Decision{Rule: r.Name, Effect: Deny, Err: fmt.Errorf("rule %q: %v", r.Name, err)}
		}
		if out != types.True {
			continue
		}
		return Decision{Allowed: r.Effect != Deny, Rule: r.Name, Effect: r.Effect, MaxTTL: r.maxTTL}
	}
	return Decision{Allowed: p.def == Allow, Effect: p.def}
}

// activation hands the Input to CEL without building a map per decision.
type activation struct{ in *Input }

func (a *activation) ResolveName(name string) (any, bool) {
	in := a.in
	switch name {
	case "endpoint":
		return in.Endpoint, true
	case "provisioner":
		return in.Provisioner, true
	case "claims":
		return mapOrEmpty(in.Claims), true
	case "spiffe_id":
		return in.SPIFFEID, true
	case "dns_names":
		return listOrEmpty(in.DNSNames), true
	case "ttl":
		return in.TTL, true
	case "scope":
		return listOrEmpty(in.Scope), true
	case "audience":
		return listOrEmpty(in.Audience), true
	case "task":
		return in.Task, true
	case "environment":
		return mapOrEmpty(in.Environment), true
	case "now":
		return in.Now, true
	case "subject":
		return in.Subject, true
	case "subject_issuer":
		return in.SubjectIssuer, true
	case "subject_type":
		return in.SubjectType, true
	case "subject_claims":
		return mapOrEmpty(in.SubjectClaims), true
	case "actors":
		return listOrEmpty(in.Actors), true
	case "chain_depth":
		return int64(in.ChainDepth), true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

var (
	emptyMap  = map[string]string{}
	emptyList = []string{}
)

func mapOrEmpty(m map[string]string) map[string]string {
	if m == nil {
		return emptyMap
	}
	return m
}

func listOrEmpty(l []string) []string {
	if l == nil {
		return emptyList
	}
	return l
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}
