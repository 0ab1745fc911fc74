package translog

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the seed corpora in testdata/fuzz")

// FuzzParseLeaf: ParseLeaf never panics, refuses with ErrMalformedLeaf, and
// whatever it accepts is exactly what NewLeaf makes of the same
// certificate and timestamp (so a stored entry cannot be re-encoded into
// another leaf hash). Seeds: testdata/fuzz/FuzzParseLeaf.
func FuzzParseLeaf(f *testing.F) {
	f.Fuzz(func(t *testing.T, input []byte) {
		l, err := ParseLeaf(input)
		if err != nil {
			if !errors.Is(err, ErrMalformedLeaf) {
				t.Fatalf("ParseLeaf() = %v, not ErrMalformedLeaf", err)
			}
			return
		}
		again, err := NewLeaf(l.Certificate(), l.Timestamp())
		if err != nil {
			t.Fatalf("NewLeaf of a parsed leaf: %v", err)
		}
		if !bytes.Equal(again.Input, input) || !bytes.Equal(again.Hash, l.Hash) {
			t.Fatalf("ParseLeaf accepted %x, which NewLeaf encodes as %x", input, again.Input)
		}
	})
}

// FuzzState: State.UnmarshalBinary never panics, refuses with
// ErrMalformedState, and what it accepts re-encodes to the same bytes and
// can be appended to. Seeds: testdata/fuzz/FuzzState.
func FuzzState(f *testing.F) {
	leaf := testLeafHashes(f, 1)
	f.Fuzz(func(t *testing.T, b []byte) {
		var s State
		if err := s.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrMalformedState) {
				t.Fatalf("UnmarshalBinary() = %v, not ErrMalformedState", err)
			}
			return
		}
		again, _ := s.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatalf("State %x re-encodes as %x", b, again)
		}
		_ = s.Root()
		if s.Size() == ^uint64(0) {
			return
		}
		next, err := s.Append(leaf, nil)
		if err != nil || next.Size() != s.Size()+1 {
			t.Fatalf("Append to a decoded State: size %d, %v", next.Size(), err)
		}
	})
}

// TestSeedCorpora checks the committed seeds are there and, with -update,
// rewrites them.
func TestSeedCorpora(t *testing.T) {
	der, _ := testCert(t, "spiffe://example.org/ns/agents/sa/fuzz")
	good, err := NewLeaf(der, 1767225600000)
	if err != nil {
		t.Fatal(err)
	}
	leaves := map[string][]byte{"valid": good.Input}
	for name, b := range malformedLeaves(t, good) {
		leaves[name] = b
	}
	states := map[string][]byte{}
	for _, n := range []int{0, 1, 5, 1000} {
		st, _ := buildTree(t, testLeafHashes(t, n))
		states[fmt.Sprintf("size-%d", n)], _ = st.MarshalBinary()
	}
	st5 := states["size-5"]
	states["bad-version"] = append([]byte{0}, st5[1:]...)
	states["missing-hash"] = st5[:len(st5)-32]
	states["max-size"] = append([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, make([]byte, 64*32)...)

	for fuzz, seeds := range map[string]map[string][]byte{"FuzzParseLeaf": leaves, "FuzzState": states} {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		for name, b := range seeds {
			file := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if _, err := os.Stat(file); err != nil {
				t.Errorf("seed missing (go test -run TestSeedCorpora -update): %v", err)
			}
		}
	}
}
