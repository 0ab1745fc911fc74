package etcd

import (
	"sync"

	"github.com/transparency-dev/merkle/compact"
)

// The tree nodes a replica needs most, for the inclusion proofs of the
// certificates it just issued, are the newest of each level: this keeps
// them in memory. A node never changes once written (a transaction that
// lost a race wrote nothing, and only committed nodes are added), so a
// cached node is never stale, whichever replica wrote it.

const (
	// nodeCacheWindow is how many of the newest nodes of each level are
	// kept; nodeCacheMax bounds the whole cache (a proof of an old entry
	// reads older nodes, which are dropped first).
	nodeCacheWindow = 4096
	nodeCacheMax    = 1 << 16
)

type nodeCache struct {
	mu  sync.Mutex
	m   map[compact.NodeID][]byte
	top [64]uint64 // per level, the highest index added
}

func newNodeCache() *nodeCache { return &nodeCache{m: make(map[compact.NodeID][]byte)} }

// get returns the cached hashes of ids, nil for those not cached, and how
// many were missing.
func (c *nodeCache) get(ids []compact.NodeID, out [][]byte) (missing int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, id := range ids {
		if h, ok := c.m[id]; ok {
			out[i] = h
		} else {
			missing++
		}
	}
	return missing
}

// add caches hash (32 bytes, not modified afterwards) as node id.
func (c *nodeCache) add(id compact.NodeID, hash []byte) {
	if id.Level >= uint(len(c.top)) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = hash
	c.top[id.Level] = max(c.top[id.Level], id.Index)
	if len(c.m) <= nodeCacheMax {
		return
	}
	for k := range c.m {
		if k.Index+nodeCacheWindow < c.top[k.Level] {
			delete(c.m, k)
		}
	}
	if len(c.m) > nodeCacheMax*3/4 {
		clear(c.m) // mostly old nodes, read for proofs of old entries
	}
}
