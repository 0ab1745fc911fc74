package translog

import (
	"context"
	"fmt"
	"sync"

	"github.com/transparency-dev/merkle/compact"
)

// MemoryNodes keeps node hashes in memory: a NodeReader for tests, audits
// and benchmarks, whose Put is a NodeWriter. It stores 32 bytes per node in
// one array per level, indexed as nodes are numbered, so a log of n leaves
// takes about 64·n bytes. The zero value is empty and ready; it is safe for
// concurrent use.
type MemoryNodes struct {
	mu     sync.RWMutex
	levels [][][hashSize]byte
}

var _ NodeReader = (*MemoryNodes)(nil)

// Put stores hash as the node id; it has the NodeWriter signature, so
// m.Put can be passed to State.Append.
func (m *MemoryNodes) Put(id compact.NodeID, hash []byte) error {
	if len(hash) != hashSize {
		return fmt.Errorf("translog: node %+v has %d bytes, want %d", id, len(hash), hashSize)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for uint(len(m.levels)) <= id.Level {
		m.levels = append(m.levels, nil)
	}
	l := m.levels[id.Level]
	if id.Index >= uint64(len(l)) {
		l = append(l, make([][hashSize]byte, id.Index+1-uint64(len(l)))...)
		m.levels[id.Level] = l
	}
	copy(l[id.Index][:], hash)
	return nil
}

// Nodes implements NodeReader. A node never Put (a gap reads as all
// zeros, which no SHA-256 output is in practice) is ErrNodeNotFound.
func (m *MemoryNodes) Nodes(_ context.Context, ids []compact.NodeID) ([][]byte, error) {
	buf := make([]byte, len(ids)*hashSize)
	out := make([][]byte, len(ids))
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i, id := range ids {
		if id.Level >= uint(len(m.levels)) || id.Index >= uint64(len(m.levels[id.Level])) || m.levels[id.Level][id.Index] == [hashSize]byte{} {
			return nil, fmt.Errorf("%w: level %d index %d", ErrNodeNotFound, id.Level, id.Index)
		}
		h := buf[i*hashSize : (i+1)*hashSize : (i+1)*hashSize]
		copy(h, m.levels[id.Level][id.Index][:])
		out[i] = h
	}
	return out, nil
}
