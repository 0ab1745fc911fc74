package nodeagent

import (
	"crypto/x509"
	"sync"

	"github.com/agentca/agentca/agent"
)

// maxChains bounds the distinct chains kept (one per issuing CA in use,
// a few during an anchor rotation).
const maxChains = 16

// chains shares one parsed copy of each issuing chain among the SVIDs
// the agent holds, instead of one per SVID: with 1,000 identities that is
// 1,000 parsed copies of the same issuing CA certificate fewer.
type chains struct {
	mu sync.Mutex
	m  map[string][]*x509.Certificate // by the chain's DER
}

// compact makes cr hold only what the agent serves: the chain shared,
// and no issuance-log receipt (the agent does not hand it out; the CA
// logged the SVID either way).
func (c *chains) compact(cr *agent.Credentials) {
	cr.LogReceipt = nil
	if len(cr.Chain) == 0 {
		return
	}
	k := string(concatDER(cr.Chain))
	c.mu.Lock()
	defer c.mu.Unlock()
	if shared, ok := c.m[k]; ok {
		cr.Chain = shared
		return
	}
	if c.m == nil || len(c.m) >= maxChains {
		c.m = map[string][]*x509.Certificate{}
	}
	c.m[k] = cr.Chain
}
