package etcd

import (
	"bytes"
	"testing"

	"github.com/transparency-dev/merkle/compact"
)

// TestNodeCacheKeepsNewest: past its bound the cache drops the nodes far
// behind the newest of their level and keeps the newest.
func TestNodeCacheKeepsNewest(t *testing.T) {
	c := newNodeCache()
	hash := func(l uint, i uint64) []byte {
		h := make([]byte, 32)
		h[0], h[1], h[2] = byte(l), byte(i), byte(i>>8)
		return h
	}
	total := uint64(nodeCacheMax + 100)
	for i := range total {
		c.add(compact.NewNodeID(0, i), hash(0, i))
		if i%2 == 1 {
			c.add(compact.NewNodeID(1, i/2), hash(1, i/2))
		}
	}
	if len(c.m) > nodeCacheMax {
		t.Fatalf("%d nodes cached, bound %d", len(c.m), nodeCacheMax)
	}
	ids := []compact.NodeID{compact.NewNodeID(0, total-1), compact.NewNodeID(0, total-nodeCacheWindow/2), compact.NewNodeID(1, total/2-1), compact.NewNodeID(0, 3)}
	out := make([][]byte, len(ids))
	if missing := c.get(ids, out); missing != 1 || out[3] != nil {
		t.Fatalf("%d missing (%v); want only the oldest node dropped", missing, out[3] != nil)
	}
	for i, id := range ids[:3] {
		if !bytes.Equal(out[i], hash(id.Level, id.Index)) {
			t.Fatalf("node %+v: %x", id, out[i])
		}
	}
}
