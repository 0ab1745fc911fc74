package api

import (
	"sync"

	"github.com/agentca/agentca/policy"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/workloads"
)

// maxConditions bounds the compiled node conditions kept; beyond it the
// cache starts again (definitions are few; compiling is the cost).
const maxConditions = 4096

// conditions caches compiled node conditions by expression: compiling is
// pure, so one cache serves every server.
var conditions struct {
	sync.Mutex
	m map[string]*policy.Condition
}

// nodeCondition returns expr compiled.
func nodeCondition(expr string) (*policy.Condition, error) {
	conditions.Lock()
	c := conditions.m[expr]
	conditions.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := policy.CompileCondition(expr)
	if err != nil {
		return nil, err
	}
	conditions.Lock()
	if conditions.m == nil || len(conditions.m) >= maxConditions {
		conditions.m = map[string]*policy.Condition{}
	}
	conditions.m[expr] = c
	conditions.Unlock()
	return c, nil
}

// nodeAllowed reports whether the node certificate node may hand out d:
// named by d's nodes or node_provisioners when it has any, and d's
// node_condition true over the node's record when it has one. A
// condition that does not compile or fails to evaluate (a claim the node
// does not have) does not allow (fail closed).
func (s *Server) nodeAllowed(d *workloads.Definition, node *store.Certificate) bool {
	if len(d.Nodes)+len(d.NodeProvisioners) > 0 && !d.NodeAllowed(node.SPIFFEID, node.Provisioner) {
		return false
	}
	if d.NodeCondition == "" {
		return len(d.Nodes)+len(d.NodeProvisioners) > 0
	}
	c, err := nodeCondition(d.NodeCondition)
	if err != nil {
		s.log.Warn("workload: a node condition does not compile; it allows no node", "definition", d.ID, "err", err)
		return false
	}
	ok, err := c.Eval(node.Claims, node.SPIFFEID, node.Provisioner)
	if err != nil {
		s.log.Debug("workload: a node condition failed to evaluate; it does not allow this node", "definition", d.ID, "node", node.SPIFFEID, "err", err)
		return false
	}
	return ok
}
