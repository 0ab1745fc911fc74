package policy

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/ext"
)

// Condition is a compiled CEL expression of type bool over a
// certificate's record: claims (its attested claims), spiffe_id and
// provisioner. A workload definition's node_condition is one. It is
// immutable and safe for concurrent use.
type Condition struct {
	prg cel.Program
}

// conditionEnv declares the variables a condition sees: the subset of a
// rule's that a stored certificate record holds.
func conditionEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("spiffe_id", cel.StringType),
		cel.Variable("provisioner", cel.StringType),
		ext.Strings(),
		cel.OptionalTypes(),
	)
}

// CompileCondition compiles expr with the bounds of a rule's "when": at
// most MaxExprLength bytes, of type bool, an estimated worst-case cost
// within MaxEstimatedCost, and the run-time cost limit of a rule.
func CompileCondition(expr string) (*Condition, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("the condition is empty")
	}
	if len(expr) > MaxExprLength {
		return nil, fmt.Errorf("the condition is longer than %d bytes", MaxExprLength)
	}
	env, err := conditionEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("does not compile: %s", oneLine(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(types.BoolType) {
		return nil, fmt.Errorf("is of type %s, not bool", ast.OutputType())
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, fmt.Errorf("cannot estimate its cost: %s", oneLine(err.Error()))
	}
	if est.Max > MaxEstimatedCost {
		return nil, fmt.Errorf("its estimated worst-case cost %d exceeds %d", est.Max, MaxEstimatedCost)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(costLimit))
	if err != nil {
		return nil, fmt.Errorf("does not compile: %s", oneLine(err.Error()))
	}
	return &Condition{prg: prg}, nil
}

// Eval evaluates c over a certificate's claims, SPIFFE ID and
// provisioner. An evaluation error (a missing claim, the cost limit) is
// returned: the caller treats it as false (fail closed).
func (c *Condition) Eval(claims map[string]string, spiffeID, provisioner string) (bool, error) {
	out, _, err := c.prg.Eval(&activation{in: &Input{Claims: claims, SPIFFEID: spiffeID, Provisioner: provisioner}})
	if err != nil {
		return false, err
	}
	return out == types.True, nil
}
