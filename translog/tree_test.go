package translog

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var seed = flag.Uint64("translog.seed", 6962, "seed for the property test's random sizes, splits and indices")

// testLeafHashes returns the leaf hashes of n leaves with made-up
// certificates (NewLeaf does not parse the DER).
func testLeafHashes(t testing.TB, n int) [][]byte {
	t.Helper()
	hs := make([][]byte, n)
	for i := range hs {
		l, err := NewLeaf(fmt.Appendf(nil, "certificate %d", i), 1700000000000+uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = l.Hash
	}
	return hs
}

// buildTree appends leafHashes to an empty State in one batch and returns
// the State and the stored nodes.
func buildTree(t testing.TB, leafHashes [][]byte) (State, *MemoryNodes) {
	t.Helper()
	mem := &MemoryNodes{}
	st, err := State{}.Append(leafHashes, mem.Put)
	if err != nil {
		t.Fatal(err)
	}
	return st, mem
}

func equalHashes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestProperty compares roots, States, stored nodes, inclusion and
// consistency proofs with the naive RFC 6962 computation, for edge sizes
// and random sizes up to 2,000, appending in random batch splits.
func TestProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(*seed, 0))
	t.Logf("seed %d (-translog.seed to change)", *seed)
	sizes := []uint64{1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1023, 1024, 1025, 2000}
	for range 100 {
		sizes = append(sizes, 1+rng.Uint64N(2000))
	}
	all := testLeafHashes(t, 2000)
	for _, n := range sizes {
		r := rand.New(rand.NewPCG(*seed, n))
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			checkTree(t, r, all[:n])
		})
	}
}

func checkTree(t *testing.T, rng *rand.Rand, leaves [][]byte) {
	ctx := context.Background()
	n := uint64(len(leaves))
	naive := newNaiveTree(leaves)
	mem := &MemoryNodes{}
	seen := map[compact.NodeID]bool{}
	var st State
	for st.Size() < n {
		batch := 1 + rng.Uint64N(min(n-st.Size(), 1+rng.Uint64N(300)))
		size := st.Size() + batch
		next, err := st.Append(leaves[st.Size():size], func(id compact.NodeID, hash []byte) error {
			begin, end := id.Coverage()
			if end > size {
				t.Errorf("append to %d reported node %+v covering [%d, %d): not a fixed node", size, id, begin, end)
			}
			if seen[id] {
				t.Errorf("node %+v reported twice", id)
			}
			seen[id] = true
			if want := naive.mth(begin, end); !bytes.Equal(hash, want) {
				t.Errorf("node %+v = %x, want MTH[%d:%d) = %x", id, hash, begin, end, want)
			}
			return mem.Put(id, hash)
		})
		if err != nil {
			t.Fatalf("Append(%d leaves at %d): %v", batch, st.Size(), err)
		}
		if next.Size() != size {
			t.Fatalf("size after append = %d, want %d", next.Size(), size)
		}
		if got, want := next.Root(), naive.mth(0, size); !bytes.Equal(got, want) {
			t.Fatalf("root at %d = %x, want %x", size, got, want)
		}
		b, err := next.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back State
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("UnmarshalBinary(MarshalBinary()) at %d: %v", size, err)
		}
		if back.Size() != size || !bytes.Equal(back.Root(), next.Root()) || !equalHashes(back.hashes, next.hashes) {
			t.Fatalf("State at %d does not survive MarshalBinary/UnmarshalBinary", size)
		}
		st = next
	}
	// Every perfect subtree node, and no other, was reported: level l
	// has ⌊n/2^l⌋ of them, 2n - popcount(n) in all.
	if want := 2*int(n) - popcount(n); len(seen) != want {
		t.Errorf("%d nodes reported, want %d", len(seen), want)
	}

	// Past roots and States from stored nodes.
	for _, m := range append([]uint64{0, 1, n}, randSizes(rng, n, 10)...) {
		root, err := RootAt(ctx, mem, m)
		if err != nil {
			t.Fatalf("RootAt(%d): %v", m, err)
		}
		if want := naive.mth(0, m); !bytes.Equal(root, want) {
			t.Errorf("RootAt(%d) = %x, want %x", m, root, want)
		}
	}
	past, err := StateAt(ctx, mem, n)
	if err != nil {
		t.Fatal(err)
	}
	if !equalHashes(past.hashes, st.hashes) {
		t.Errorf("StateAt(%d) differs from the appended State", n)
	}

	// Inclusion proofs, for the edges and random leaves, in the full tree
	// and in random smaller trees that contain the leaf.
	type pair struct{ a, b uint64 }
	incl := []pair{{0, n}, {n - 1, n}, {0, 1}}
	for range 64 {
		i := rng.Uint64N(n)
		incl = append(incl, pair{i, n}, pair{i, i + 1 + rng.Uint64N(n-i)})
	}
	for _, p := range incl {
		index, size := p.a, p.b
		got, err := InclusionProof(ctx, mem, index, size)
		if err != nil {
			t.Fatalf("InclusionProof(%d, %d): %v", index, size, err)
		}
		if want := naive.path(index, 0, size); !equalHashes(got, want) {
			t.Fatalf("InclusionProof(%d, %d) = %x, want PATH %x", index, size, got, want)
		}
		root := naive.mth(0, size)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaves[index], got, root); err != nil {
			t.Fatalf("proof.VerifyInclusion(%d, %d): %v", index, size, err)
		}
		if err := VerifyInclusion(leaves[index], index, size, got, root); err != nil {
			t.Fatalf("VerifyInclusion(%d, %d): %v", index, size, err)
		}
	}

	// Consistency proofs between the edges and random pairs of sizes.
	cons := []pair{{0, n}, {1, n}, {n, n}, {n / 2, n}}
	for range 64 {
		a := rng.Uint64N(n + 1)
		cons = append(cons, pair{a, a + rng.Uint64N(n-a+1)})
	}
	for _, p := range cons {
		size1, size2 := p.a, p.b
		got, err := ConsistencyProof(ctx, mem, size1, size2)
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", size1, size2, err)
		}
		want := [][]byte{}
		if size1 > 0 { // RFC 6962 defines PROOF for 0 < m ≤ n only.
			want = naive.proof(size1, size2)
		}
		if !equalHashes(got, want) {
			t.Fatalf("ConsistencyProof(%d, %d) = %x, want PROOF %x", size1, size2, got, want)
		}
		root1, root2 := naive.mth(0, size1), naive.mth(0, size2)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size1, size2, got, root1, root2); err != nil {
			t.Fatalf("proof.VerifyConsistency(%d, %d): %v", size1, size2, err)
		}
		if err := VerifyConsistency(size1, size2, got, root1, root2); err != nil {
			t.Fatalf("VerifyConsistency(%d, %d): %v", size1, size2, err)
		}
	}
}

func popcount(n uint64) int {
	c := 0
	for ; n != 0; n &= n - 1 {
		c++
	}
	return c
}

func randSizes(rng *rand.Rand, n uint64, k int) []uint64 {
	s := make([]uint64, k)
	for i := range s {
		s[i] = rng.Uint64N(n + 1)
	}
	return s
}

func TestEmptyTree(t *testing.T) {
	var st State
	if got, want := st.Root(), rfc6962.DefaultHasher.EmptyRoot(); !bytes.Equal(got, want) {
		t.Errorf("empty root = %x, want %x", got, want)
	}
	next, err := st.Append(nil, nil)
	if err != nil || next.Size() != 0 {
		t.Errorf("Append(nil) = size %d, %v; want 0, nil", next.Size(), err)
	}
	root, err := RootAt(context.Background(), &MemoryNodes{}, 0)
	if err != nil || !bytes.Equal(root, st.Root()) {
		t.Errorf("RootAt(0) = %x, %v; want the empty root", root, err)
	}
	b, _ := st.MarshalBinary()
	var back State
	if err := back.UnmarshalBinary(b); err != nil || back.Size() != 0 {
		t.Errorf("empty State round trip: size %d, %v", back.Size(), err)
	}
}

// TestAppendIsPure: appending never changes the receiver or the caller's
// leaf hashes, so a retried transaction can append again to what it read.
func TestAppendIsPure(t *testing.T) {
	leaves := testLeafHashes(t, 300)
	base, _ := buildTree(t, leaves[:100])
	before, _ := base.MarshalBinary()
	a, err := base.Append(leaves[100:200], nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := base.Append(leaves[200:300], nil)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := base.MarshalBinary()
	if !bytes.Equal(before, after) {
		t.Fatal("Append modified its receiver")
	}
	again, _ := base.Append(leaves[100:200], nil)
	if !bytes.Equal(again.Root(), a.Root()) || bytes.Equal(a.Root(), b.Root()) {
		t.Fatal("appends to the same State are not independent")
	}
	// The new State must not alias the caller's leaf hashes.
	mine := [][]byte{bytes.Clone(leaves[0])}
	st, _ := State{}.Append(mine, nil)
	root := st.Root()
	mine[0][0] ^= 1
	if !bytes.Equal(st.Root(), root) {
		t.Fatal("State aliases a leaf hash slice of the caller")
	}
}

func TestAppendErrors(t *testing.T) {
	boom := errors.New("disk full")
	leaves := testLeafHashes(t, 4)
	tests := []struct {
		name   string
		leaves [][]byte
		write  NodeWriter
		want   error
	}{
		{"short hash", [][]byte{leaves[0], leaves[1][:31]}, nil, ErrMalformedState},
		{"long hash", [][]byte{append(bytes.Clone(leaves[0]), 0)}, nil, ErrMalformedState},
		{"nil hash", [][]byte{nil}, nil, ErrMalformedState},
		{"writer fails", leaves, func(id compact.NodeID, _ []byte) error {
			if id.Level == 1 {
				return boom
			}
			return nil
		}, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := State{}.Append(tt.leaves, tt.write)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Append() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestUnmarshalStateErrors(t *testing.T) {
	good, _ := buildTree(t, testLeafHashes(t, 5)) // two hashes
	b, _ := good.MarshalBinary()
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", b[:8]},
		{"bad version", append([]byte{2}, b[1:]...)},
		{"missing hash", b[:len(b)-32]},
		{"truncated hash", b[:len(b)-1]},
		{"extra byte", append(bytes.Clone(b), 0)},
		{"size without hashes", b[:9]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s State
			if err := s.UnmarshalBinary(tt.b); !errors.Is(err, ErrMalformedState) {
				t.Fatalf("UnmarshalBinary() = %v, want ErrMalformedState", err)
			}
		})
	}
}

func TestProofRangeErrors(t *testing.T) {
	ctx := context.Background()
	_, mem := buildTree(t, testLeafHashes(t, 10))
	if _, err := InclusionProof(ctx, mem, 10, 10); !errors.Is(err, ErrRange) {
		t.Errorf("InclusionProof(10, 10) = %v, want ErrRange", err)
	}
	if _, err := InclusionProof(ctx, mem, 0, 0); !errors.Is(err, ErrRange) {
		t.Errorf("InclusionProof(0, 0) = %v, want ErrRange", err)
	}
	if _, err := ConsistencyProof(ctx, mem, 5, 4); !errors.Is(err, ErrRange) {
		t.Errorf("ConsistencyProof(5, 4) = %v, want ErrRange", err)
	}
	// Beyond what was stored: the reader's not-found comes through.
	if _, err := InclusionProof(ctx, mem, 3, 12); !errors.Is(err, ErrNodeNotFound) {
		t.Errorf("InclusionProof(3, 12) = %v, want ErrNodeNotFound", err)
	}
	if _, err := RootAt(ctx, mem, 11); !errors.Is(err, ErrNodeNotFound) {
		t.Errorf("RootAt(11) = %v, want ErrNodeNotFound", err)
	}
}

// badReader returns what a broken store might.
type badReader struct{ hashes [][]byte }

func (r badReader) Nodes(context.Context, []compact.NodeID) ([][]byte, error) { return r.hashes, nil }

func TestReaderMisbehaves(t *testing.T) {
	ctx := context.Background()
	h := make([]byte, 32)
	for _, r := range []badReader{{nil}, {[][]byte{h, h, h, h, h, h, h, h}}, {[][]byte{h, h, h[:31]}}} {
		if _, err := InclusionProof(ctx, r, 2, 7); err == nil {
			t.Errorf("InclusionProof with %d hashes from the reader succeeded", len(r.hashes))
		}
	}
}

// TestTamperedProofs: a proof or root that was changed in any way fails
// with the typed error, carrying both roots when the proof is well formed.
func TestTamperedProofs(t *testing.T) {
	ctx := context.Background()
	leaves := testLeafHashes(t, 1000)
	st, mem := buildTree(t, leaves)
	const index, size1 = 377, 600
	root := st.Root()
	root1, err := RootAt(ctx, mem, size1)
	if err != nil {
		t.Fatal(err)
	}
	incl, err := InclusionProof(ctx, mem, index, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := ConsistencyProof(ctx, mem, size1, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	flip := func(p [][]byte, i int) [][]byte {
		q := make([][]byte, len(p))
		for j := range p {
			q[j] = bytes.Clone(p[j])
		}
		q[i][0] ^= 0x80
		return q
	}
	flipped := func(b []byte) []byte { c := bytes.Clone(b); c[31] ^= 1; return c }

	inclusion := []struct {
		name     string
		leaf     []byte
		index    uint64
		size     uint64
		path     [][]byte
		root     []byte
		mismatch bool // a well-formed proof that leads to another root
	}{
		{"flipped first node", leaves[index], index, 1000, flip(incl, 0), root, true},
		{"flipped last node", leaves[index], index, 1000, flip(incl, len(incl)-1), root, true},
		{"other leaf", leaves[index+1], index, 1000, incl, root, true},
		{"other index", leaves[index], index + 2, 1000, incl, root, true},
		{"other root", leaves[index], index, 1000, incl, flipped(root), true},
		{"node dropped", leaves[index], index, 1000, incl[:len(incl)-1], root, false},
		{"node added", leaves[index], index, 1000, append(bytes2(incl), root), root, false},
		{"index beyond size", leaves[index], 1000, 1000, incl, root, false},
	}
	for _, tt := range inclusion {
		t.Run("inclusion/"+tt.name, func(t *testing.T) {
			err := VerifyInclusion(tt.leaf, tt.index, tt.size, tt.path, tt.root)
			var ie *InclusionError
			if !errors.As(err, &ie) {
				t.Fatalf("VerifyInclusion() = %v, want *InclusionError", err)
			}
			if ie.Index != tt.index || ie.Size != tt.size || !bytes.Equal(ie.Root, tt.root) {
				t.Errorf("InclusionError does not carry the request: %+v", ie)
			}
			var rm proof.RootMismatchError
			if got := errors.As(err, &rm); got != tt.mismatch {
				t.Errorf("errors.As(RootMismatchError) = %v, want %v (%v)", got, tt.mismatch, err)
			} else if got && (!bytes.Equal(rm.ExpectedRoot, tt.root) || bytes.Equal(rm.CalculatedRoot, tt.root)) {
				t.Errorf("RootMismatchError does not carry both roots: %v", rm)
			}
		})
	}

	consistency := []struct {
		name         string
		size1, size2 uint64
		proof        [][]byte
		root1, root2 []byte
	}{
		{"flipped node", size1, 1000, flip(cons, 1), root1, root},
		{"forked old root", size1, 1000, cons, flipped(root1), root},
		{"rewritten new root", size1, 1000, cons, root1, flipped(root)},
		{"other size", size1 + 1, 1000, cons, root1, root},
		{"node dropped", size1, 1000, cons[1:], root1, root},
		{"sizes swapped", 1000, size1, cons, root, root1},
		{"same size, other root", 1000, 1000, nil, root, flipped(root)},
	}
	for _, tt := range consistency {
		t.Run("consistency/"+tt.name, func(t *testing.T) {
			err := VerifyConsistency(tt.size1, tt.size2, tt.proof, tt.root1, tt.root2)
			var ce *ConsistencyError
			if !errors.As(err, &ce) {
				t.Fatalf("VerifyConsistency() = %v, want *ConsistencyError", err)
			}
			if ce.Size1 != tt.size1 || ce.Size2 != tt.size2 || !bytes.Equal(ce.Root1, tt.root1) || !bytes.Equal(ce.Root2, tt.root2) {
				t.Errorf("ConsistencyError does not carry both trees: %+v", ce)
			}
		})
	}
}

func bytes2(p [][]byte) [][]byte { return append([][]byte(nil), p...) }

func TestMemoryNodes(t *testing.T) {
	var m MemoryNodes
	h := bytes.Repeat([]byte{7}, 32)
	if err := m.Put(compact.NewNodeID(3, 5), h); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(compact.NewNodeID(0, 0), h[:31]); err == nil {
		t.Error("Put of a 31-byte hash succeeded")
	}
	got, err := m.Nodes(context.Background(), []compact.NodeID{compact.NewNodeID(3, 5)})
	if err != nil || !bytes.Equal(got[0], h) {
		t.Fatalf("Nodes() = %x, %v", got, err)
	}
	got[0][0] = 0 // the caller owns what Nodes returns
	for _, id := range []compact.NodeID{compact.NewNodeID(3, 4), compact.NewNodeID(3, 6), compact.NewNodeID(9, 0), compact.NewNodeID(0, 0)} {
		if _, err := m.Nodes(context.Background(), []compact.NodeID{compact.NewNodeID(3, 5), id}); !errors.Is(err, ErrNodeNotFound) {
			t.Errorf("Nodes(%+v) = %v, want ErrNodeNotFound", id, err)
		}
	}
	again, _ := m.Nodes(context.Background(), []compact.NodeID{compact.NewNodeID(3, 5)})
	if !bytes.Equal(again[0], h) {
		t.Error("modifying Nodes' result changed the stored node")
	}
}

// TestBorderIsStoredNodes: the border State.Border reports is the tree's
// compact range at its size: each node is one Append wrote, with the same
// hash, and together they give the root.
func TestBorderIsStoredNodes(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 7, 8, 13, 64, 100} {
		written := map[compact.NodeID][]byte{}
		st, err := State{}.Append(testLeafHashes(t, n), func(id compact.NodeID, h []byte) error {
			written[id] = h
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var ids []compact.NodeID
		var hashes [][]byte
		st.Border(func(id compact.NodeID, h []byte) {
			ids = append(ids, id)
			hashes = append(hashes, h)
			if w, ok := written[id]; !ok || !bytes.Equal(w, h) {
				t.Fatalf("size %d: border node %+v is not a node Append wrote with that hash", n, id)
			}
		})
		if want := compact.RangeNodes(0, uint64(n), nil); len(ids) != len(want) {
			t.Fatalf("size %d: %d border nodes, want %d", n, len(ids), len(want))
		}
		r, err := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewRange(0, uint64(n), hashes)
		if err != nil {
			t.Fatal(err)
		}
		root, err := r.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && !bytes.Equal(root, st.Root()) {
			t.Fatalf("size %d: the border's root is not the state's", n)
		}
	}
}
