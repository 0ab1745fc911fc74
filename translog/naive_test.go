package translog

import (
	"github.com/transparency-dev/merkle/rfc6962"
)

// naiveTree is the independent computation the property test compares
// against: RFC 6962 §2.1 MTH, PATH and PROOF written out recursively over
// the leaf hashes, with the rfc6962 hasher's two primitives and nothing
// from compact or proof. MTH of [begin, end) is memoised.
type naiveTree struct {
	leaves [][]byte // leaf hashes
	memo   map[[2]uint64][]byte
}

func newNaiveTree(leafHashes [][]byte) *naiveTree {
	return &naiveTree{leaves: leafHashes, memo: map[[2]uint64][]byte{}}
}

// split returns k, the largest power of two smaller than n (n ≥ 2).
func split(n uint64) uint64 {
	k := uint64(1)
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// mth is MTH(D[begin:end]).
func (t *naiveTree) mth(begin, end uint64) []byte {
	n := end - begin
	switch n {
	case 0:
		return rfc6962.DefaultHasher.EmptyRoot()
	case 1:
		return t.leaves[begin]
	}
	if h, ok := t.memo[[2]uint64{begin, end}]; ok {
		return h
	}
	k := split(n)
	h := rfc6962.DefaultHasher.HashChildren(t.mth(begin, begin+k), t.mth(begin+k, end))
	t.memo[[2]uint64{begin, end}] = h
	return h
}

// path is PATH(m, D[begin:end]) for the m-th leaf of that subtree.
func (t *naiveTree) path(m, begin, end uint64) [][]byte {
	n := end - begin
	if n == 1 {
		return [][]byte{}
	}
	k := split(n)
	if m < k {
		return append(t.path(m, begin, begin+k), t.mth(begin+k, end))
	}
	return append(t.path(m-k, begin+k, end), t.mth(begin, begin+k))
}

// proof is PROOF(m, D[0:n]).
func (t *naiveTree) proof(m, n uint64) [][]byte {
	return t.subproof(m, 0, n, true)
}

// subproof is SUBPROOF(m, D[begin:end], b).
func (t *naiveTree) subproof(m, begin, end uint64, b bool) [][]byte {
	n := end - begin
	if m == n {
		if b {
			return [][]byte{}
		}
		return [][]byte{t.mth(begin, end)}
	}
	k := split(n)
	if m <= k {
		return append(t.subproof(m, begin, begin+k, b), t.mth(begin+k, end))
	}
	return append(t.subproof(m-k, begin+k, end, false), t.mth(begin, begin+k))
}
