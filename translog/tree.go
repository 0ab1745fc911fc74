package translog

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// State is the log's tree at one size: the size and the hashes of the
// compact range [0, size), that is the roots of the perfect subtrees the
// tree decomposes into, largest first (one per set bit of the size, so at
// most 64). That is all an append needs. The zero value is the empty tree.
//
// A State is a value: Append returns a new one and never modifies its
// receiver, so a store transaction that is retried can append again to the
// State it read.
type State struct {
	size   uint64
	hashes [][]byte
}

// Size returns the number of leaves in the tree.
func (s State) Size() uint64 { return s.size }

// Root returns the RFC 6962 root hash (MTH) of the tree; for the empty tree
// that is SHA-256 of the empty string.
func (s State) Root() []byte {
	if s.size == 0 {
		return hasher.EmptyRoot()
	}
	r, err := factory.NewRange(0, s.size, s.hashes)
	if err != nil {
		panic("translog: inconsistent State: " + err.Error()) // States are only built here.
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic("translog: inconsistent State: " + err.Error())
	}
	return root
}

// NodeWriter receives every node that an append fixes: each new leaf (level
// 0) and each perfect subtree it completes. Proofs for any tree size up to
// the new one need exactly these nodes, so the store persists each under
// its compact.NodeID (a node's hash, once reported, never changes). The
// writer may keep hash (translog never modifies it) but must not modify it.
// An error stops the append, which then returns it.
type NodeWriter func(id compact.NodeID, hash []byte) error

// Append returns the State with leafHashes (RFC 6962 leaf hashes, as in
// Leaf.Hash) appended in order, reporting each node that becomes fixed to
// write (which may be nil). It costs about one hash per leaf plus O(log n)
// per call, so append a whole transaction's leaves at once. s is not
// modified, and neither are leafHashes.
func (s State) Append(leafHashes [][]byte, write NodeWriter) (State, error) {
	if s.size+uint64(len(leafHashes)) < s.size {
		return State{}, fmt.Errorf("%w: tree size overflows", ErrRange)
	}
	// Copy the leaf hashes into one buffer: the new State keeps some of
	// them, and the caller may reuse its slices.
	buf := make([]byte, 0, len(leafHashes)*hashSize)
	for i, h := range leafHashes {
		if len(h) != hashSize {
			return State{}, fmt.Errorf("%w: leaf hash %d has %d bytes, want %d", ErrMalformedState, i, len(h), hashSize)
		}
		buf = append(buf, h...)
	}
	hashes := make([][]byte, len(s.hashes), 64)
	copy(hashes, s.hashes)
	r, err := factory.NewRange(0, s.size, hashes)
	if err != nil {
		return State{}, fmt.Errorf("%w: %v", ErrMalformedState, err)
	}
	var werr error
	var visit compact.VisitFn
	if write != nil {
		visit = func(id compact.NodeID, hash []byte) {
			if werr == nil {
				werr = write(id, hash)
			}
		}
	}
	for i := range leafHashes {
		if err := r.Append(buf[i*hashSize:(i+1)*hashSize:(i+1)*hashSize], visit); err != nil {
			return State{}, fmt.Errorf("%w: %v", ErrMalformedState, err)
		}
		if werr != nil {
			return State{}, fmt.Errorf("translog: write node: %w", werr)
		}
	}
	return State{size: r.End(), hashes: r.Hashes()}, nil
}

// Border calls fn with each node of s's compact range, the tree's right
// border (the hashes State keeps), from the largest. They are nodes of
// the tree, stored when they were fixed: a reader of nodes may cache them.
func (s State) Border(fn func(id compact.NodeID, hash []byte)) {
	for i, id := range compact.RangeNodes(0, s.size, nil) {
		if i < len(s.hashes) {
			fn(id, s.hashes[i])
		}
	}
}

// stateVersion is the first byte of the State encoding.
const stateVersion = 1

// MarshalBinary encodes s for the store: a version byte (1), the size as 8
// big-endian bytes, then the compact range's hashes, 32 bytes each.
func (s State) MarshalBinary() ([]byte, error) {
	b := make([]byte, 9, 9+len(s.hashes)*hashSize)
	b[0] = stateVersion
	binary.BigEndian.PutUint64(b[1:], s.size)
	for _, h := range s.hashes {
		b = append(b, h...)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote, or returns
// ErrMalformedState.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) < 9 || b[0] != stateVersion {
		return fmt.Errorf("%w: bad header", ErrMalformedState)
	}
	size := binary.BigEndian.Uint64(b[1:9])
	n := bits.OnesCount64(size)
	if len(b) != 9+n*hashSize {
		return fmt.Errorf("%w: %d bytes for size %d, want %d", ErrMalformedState, len(b), size, 9+n*hashSize)
	}
	body := append([]byte(nil), b[9:]...)
	hashes := make([][]byte, n)
	for i := range hashes {
		hashes[i] = body[i*hashSize : (i+1)*hashSize : (i+1)*hashSize]
	}
	*s = State{size: size, hashes: hashes}
	return nil
}

// NodeReader reads stored node hashes; the store implements it.
type NodeReader interface {
	// Nodes returns the hashes of the nodes ids, in the same order, in a
	// new slice (the caller may modify it). Every requested node is one
	// that Append reported for a size the caller asked about. A missing
	// node is an error wrapping ErrNodeNotFound.
	Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error)
}

// readNodes fetches ids through r and checks what comes back.
func readNodes(ctx context.Context, r NodeReader, ids []compact.NodeID) ([][]byte, error) {
	if len(ids) == 0 {
		return [][]byte{}, nil
	}
	hashes, err := r.Nodes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("translog: read nodes: %w", err)
	}
	if len(hashes) != len(ids) {
		return nil, fmt.Errorf("translog: read nodes: got %d hashes for %d nodes", len(hashes), len(ids))
	}
	for i, h := range hashes {
		if len(h) != hashSize {
			return nil, fmt.Errorf("translog: node %+v has %d bytes, want %d", ids[i], len(h), hashSize)
		}
	}
	return hashes, nil
}

// InclusionProof returns the RFC 6962 audit path for the leaf at index in
// the tree of the given size, reading O(log size) nodes from r. The caller
// checks that size is at most the log's size; index ≥ size is ErrRange.
func InclusionProof(ctx context.Context, r NodeReader, index, size uint64) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: leaf index %d, tree size %d", ErrRange, index, size)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRange, err)
	}
	hashes, err := readNodes(ctx, r, nodes.IDs)
	if err != nil {
		return nil, err
	}
	p, err := nodes.Rehash(hashes, hasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("translog: inclusion proof: %w", err)
	}
	return p, nil
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees
// of sizes size1 and size2, reading O(log size2) nodes from r. The caller
// checks that size2 is at most the log's size; size1 > size2 is ErrRange.
// The proof is empty when size1 is 0 or equals size2.
func ConsistencyProof(ctx context.Context, r NodeReader, size1, size2 uint64) ([][]byte, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("%w: first size %d > second size %d", ErrRange, size1, size2)
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRange, err)
	}
	hashes, err := readNodes(ctx, r, nodes.IDs)
	if err != nil {
		return nil, err
	}
	p, err := nodes.Rehash(hashes, hasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("translog: consistency proof: %w", err)
	}
	return p, nil
}

// StateAt rebuilds the State of the tree at a past size from the stored
// nodes (one per set bit of size): for a root at that size, to check a
// stored State, or to recover one.
func StateAt(ctx context.Context, r NodeReader, size uint64) (State, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes, err := readNodes(ctx, r, ids)
	if err != nil {
		return State{}, err
	}
	if size == 0 {
		hashes = nil
	}
	return State{size: size, hashes: hashes}, nil
}

// RootAt returns the root hash of the tree at a past size, computed from
// the stored nodes (for get-sth-consistency and audits).
func RootAt(ctx context.Context, r NodeReader, size uint64) ([]byte, error) {
	s, err := StateAt(ctx, r, size)
	if err != nil {
		return nil, err
	}
	return s.Root(), nil
}

// VerifyInclusion checks that auditPath proves the leaf with leafHash at
// index in the tree of the given size and root. It returns an
// *InclusionError when it does not.
func VerifyInclusion(leafHash []byte, index, size uint64, auditPath [][]byte, root []byte) error {
	if err := proof.VerifyInclusion(hasher, index, size, leafHash, auditPath, root); err != nil {
		return &InclusionError{Index: index, Size: size, LeafHash: leafHash, Root: root, Err: err}
	}
	return nil
}

// VerifyConsistency checks that consistency proves the tree of size2 and
// root2 extends the tree of size1 and root1. It returns a
// *ConsistencyError when it does not: the log forked or was rewritten, or
// the proof is wrong.
func VerifyConsistency(size1, size2 uint64, consistency [][]byte, root1, root2 []byte) error {
	if err := proof.VerifyConsistency(hasher, size1, size2, consistency, root1, root2); err != nil {
		return &ConsistencyError{Size1: size1, Size2: size2, Root1: root1, Root2: root2, Err: err}
	}
	return nil
}
