package storetest

// Conformance tests of the issuance log's storage: appends atomic with
// issuance, gap-free under concurrency, entries and proofs that round-trip.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// logTests are added to Run's list.
var logTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"LogAppend", testLogAppend},
	{"LogRefusalAddsNothing", testLogRefusalAddsNothing},
	{"LogConcurrent", testLogConcurrent},
	{"LogWithoutLeaf", testLogWithoutLeaf},
	{"LogLeafMismatch", testLogLeafMismatch},
	{"LogEntriesRange", testLogEntriesRange},
	{"LogTreeHead", testLogTreeHead},
}

// logTS is the leaf timestamp the tests use (milliseconds).
var logTS = uint64(now.UnixMilli())

// logged returns a certificate with a unique DER and its leaf.
func logged(t *testing.T, id string) (store.Certificate, *translog.Leaf) {
	t.Helper()
	c := cert(t, id)
	c.DER = append([]byte{0x30, 0x81}, mustHex(t, c.Serial)...)
	l, err := translog.NewLeaf(c.DER, logTS)
	if err != nil {
		t.Fatal(err)
	}
	return c, l
}

// checkLog checks the whole stored log against want (the leaves in index
// order): state, entries, index by hash, records, and that every inclusion
// proof read from the store verifies against a root computed in memory.
func checkLog(t *testing.T, s store.Store, want []*translog.Leaf) {
	t.Helper()
	ctx := context.Background()
	st, err := s.LogState(ctx)
	if err != nil {
		t.Fatalf("LogState: %v", err)
	}
	if st.Size() != uint64(len(want)) {
		t.Fatalf("log size %d, want %d", st.Size(), len(want))
	}
	var mem translog.MemoryNodes
	hashes := make([][]byte, len(want))
	for i, l := range want {
		hashes[i] = l.Hash
	}
	ref, err := translog.State{}.Append(hashes, mem.Put)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.Root(), ref.Root()) {
		t.Fatalf("stored root %x, computed %x", st.Root(), ref.Root())
	}
	entries, err := s.LogEntries(ctx, 0, uint64(len(want))+10)
	if err != nil {
		t.Fatalf("LogEntries: %v", err)
	}
	if len(entries) != len(want) {
		t.Fatalf("LogEntries returned %d entries, want %d", len(entries), len(want))
	}
	for i, in := range entries {
		if !bytes.Equal(in, want[i].Input) {
			t.Fatalf("entry %d differs from the leaf appended", i)
		}
		if _, err := translog.ParseLeaf(in); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		idx, err := s.LogIndex(ctx, want[i].Hash)
		if err != nil || idx != uint64(i) {
			t.Fatalf("LogIndex(leaf %d) = %d, %v", i, idx, err)
		}
		p, err := translog.InclusionProof(ctx, s, uint64(i), st.Size())
		if err != nil {
			t.Fatalf("InclusionProof(%d): %v", i, err)
		}
		if err := translog.VerifyInclusion(want[i].Hash, uint64(i), st.Size(), p, ref.Root()); err != nil {
			t.Fatal(err)
		}
	}
	for _, size := range []uint64{0, 1, st.Size() / 3, st.Size() / 2, st.Size()} {
		if size > st.Size() {
			continue
		}
		root, err := translog.RootAt(ctx, s, size)
		if err != nil {
			t.Fatalf("RootAt(%d): %v", size, err)
		}
		memRoot, _ := translog.RootAt(ctx, &mem, size)
		if !bytes.Equal(root, memRoot) {
			t.Fatalf("root at %d from the store %x, in memory %x", size, root, memRoot)
		}
		p, err := translog.ConsistencyProof(ctx, s, size, st.Size())
		if err != nil {
			t.Fatalf("ConsistencyProof(%d, %d): %v", size, st.Size(), err)
		}
		if err := translog.VerifyConsistency(size, st.Size(), p, root, ref.Root()); err != nil {
			t.Fatal(err)
		}
	}
}

func testLogAppend(t *testing.T, s store.Store) {
	ctx := context.Background()
	if st, err := s.LogState(ctx); err != nil || st.Size() != 0 {
		t.Fatalf("new store: LogState = %d entries, %v", st.Size(), err)
	}
	var leaves []*translog.Leaf
	for i := range 5 {
		c, l := logged(t, "spiffe://example.org/a")
		iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
		if err := s.Issue(ctx, iss); err != nil {
			t.Fatalf("Issue: %v", err)
		}
		if iss.Certificate.LogIndex != uint64(i) || iss.Certificate.LogTimestamp != logTS {
			t.Fatalf("Issuance after Issue: index %d timestamp %d, want %d %d", iss.Certificate.LogIndex, iss.Certificate.LogTimestamp, i, logTS)
		}
		rec, err := s.Certificate(ctx, c.Serial)
		if err != nil || !rec.Logged() || rec.LogIndex != uint64(i) || rec.LogTimestamp != logTS {
			t.Fatalf("record %+v, %v: want log index %d", rec, err, i)
		}
		leaves = append(leaves, l)
	}
	checkLog(t, s, leaves)
}

func testLogRefusalAddsNothing(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	first, l0 := logged(t, id)
	if err := s.Issue(ctx, &store.Issuance{Certificate: first, Now: now, LogLeaf: l0}); err != nil {
		t.Fatal(err)
	}
	used := newToken(t, s, id, time.Hour)
	c, l := logged(t, id)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, JoinToken: used, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, id), Once: []string{"k"}, Now: now}); err != nil {
		t.Fatal(err)
	}
	fresh := newToken(t, s, id, time.Hour)
	dupSerial, lDup := logged(t, id)
	dupSerial.Serial = first.Serial
	usedAgain, lUsed := logged(t, id)
	replayed, lReplay := logged(t, id)
	refused := []struct {
		name string
		iss  *store.Issuance
		want error
		leaf *translog.Leaf
	}{
		{"duplicate serial", &store.Issuance{Certificate: dupSerial, JoinToken: fresh, Now: now, LogLeaf: lDup}, store.ErrDuplicateSerial, lDup},
		{"used token", &store.Issuance{Certificate: usedAgain, JoinToken: used, Now: now, LogLeaf: lUsed}, store.ErrTokenInvalid, lUsed},
		{"replay key", &store.Issuance{Certificate: replayed, Once: []string{"k"}, Now: now, LogLeaf: lReplay}, store.ErrReplay, lReplay},
		{"certificate already logged", &store.Issuance{Certificate: func() store.Certificate { c2 := first; c2.Serial = randSerial(t); return c2 }(), Now: now, LogLeaf: l0}, store.ErrDuplicateSerial, nil},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Issue(ctx, tc.iss); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.leaf != nil {
				if _, err := s.LogIndex(ctx, tc.leaf.Hash); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("refused issuance's leaf is in the log: %v", err)
				}
			}
		})
	}
	tok, err := s.JoinToken(ctx, fresh)
	if err != nil || tok.UsedBy != "" {
		t.Fatalf("token consumed by a refused issuance: %+v, %v", tok, err)
	}
	checkLog(t, s, []*translog.Leaf{l0, l})
}

func testLogConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	shared := newToken(t, s, id, time.Hour)
	const n = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	byIndex := map[uint64]*translog.Leaf{}
	serials := map[string]uint64{}
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, l := logged(t, id)
			iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
			if i%10 == 0 {
				iss.JoinToken = shared // at most one of these succeeds
			}
			<-start
			err := s.Issue(ctx, iss)
			if err != nil {
				if i%10 != 0 || !errors.Is(err, store.ErrTokenInvalid) {
					t.Errorf("Issue %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev := byIndex[iss.Certificate.LogIndex]; prev != nil {
				t.Errorf("index %d assigned twice", iss.Certificate.LogIndex)
			}
			byIndex[iss.Certificate.LogIndex] = l
			serials[c.Serial] = iss.Certificate.LogIndex
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	if want := n - n/10 + 1; len(byIndex) != want {
		t.Fatalf("%d issuances succeeded, want %d", len(byIndex), want)
	}
	leaves := make([]*translog.Leaf, len(byIndex))
	for i := range leaves {
		l := byIndex[uint64(i)]
		if l == nil {
			t.Fatalf("log has a gap at index %d", i)
		}
		leaves[i] = l
	}
	checkLog(t, s, leaves)
	recs, err := s.ListCertificates(ctx, store.ListOptions{Limit: 10 * n})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(leaves) {
		t.Fatalf("%d certificate records, %d log entries", len(recs), len(leaves))
	}
	for _, r := range recs {
		i, ok := serials[r.Serial]
		if !ok || !r.Logged() || r.LogIndex != i || !bytes.Equal(leaves[i].Certificate(), r.DER) {
			t.Fatalf("record %s: log index %d (logged %v), want %d with its DER", r.Serial, r.LogIndex, r.Logged(), i)
		}
	}
}

func testLogWithoutLeaf(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := cert(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Certificate(ctx, c.Serial)
	if err != nil || rec.Logged() {
		t.Fatalf("record without a leaf: %+v, %v; want not logged", rec, err)
	}
	checkLog(t, s, nil)
}

func testLogLeafMismatch(t *testing.T, s store.Store) {
	ctx := context.Background()
	c, _ := logged(t, "spiffe://example.org/a")
	_, other := logged(t, "spiffe://example.org/a")
	zero, err := translog.NewLeaf(c.DER, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*translog.Leaf{other, zero} {
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err == nil {
			t.Fatal("Issue with a leaf of another certificate (or without timestamp) succeeded")
		}
	}
	if _, err := s.Certificate(ctx, c.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused issuance was recorded: %v", err)
	}
	checkLog(t, s, nil)
}

func testLogEntriesRange(t *testing.T, s store.Store) {
	ctx := context.Background()
	var leaves []*translog.Leaf
	for range 10 {
		c, l := logged(t, "spiffe://example.org/a")
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, l)
	}
	for _, r := range []struct{ start, end, want uint64 }{
		{0, 10, 10}, {3, 7, 4}, {9, 100, 1}, {10, 11, 0}, {5, 5, 0}, {7, 3, 0}, {0, ^uint64(0), 10},
	} {
		got, err := s.LogEntries(ctx, r.start, r.end)
		if err != nil {
			t.Fatalf("LogEntries(%d, %d): %v", r.start, r.end, err)
		}
		if uint64(len(got)) != r.want {
			t.Fatalf("LogEntries(%d, %d): %d entries, want %d", r.start, r.end, len(got), r.want)
		}
		for i, in := range got {
			if !bytes.Equal(in, leaves[r.start+uint64(i)].Input) {
				t.Fatalf("LogEntries(%d, %d)[%d] is not entry %d", r.start, r.end, i, r.start+uint64(i))
			}
		}
	}
	if _, err := s.LogIndex(ctx, make([]byte, 32)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LogIndex(unknown): err = %v, want ErrNotFound", err)
	}
	checkLog(t, s, leaves)
}

func testLogTreeHead(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.TreeHead(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TreeHead on a new store: err = %v, want ErrNotFound", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		c, l := logged(t, "spiffe://example.org/a")
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(st translog.State, ts uint64) *ct.SignedTreeHead {
		sth, err := signer.Sign(st, ts)
		if err != nil {
			t.Fatal(err)
		}
		return sth
	}
	at2, err := translog.StateAt(ctx, s, 2)
	if err != nil {
		t.Fatal(err)
	}
	sth4 := sign(st, logTS+10)
	if err := s.SaveTreeHead(ctx, sth4); err != nil {
		t.Fatalf("SaveTreeHead: %v", err)
	}
	got, err := s.TreeHead(ctx)
	if err != nil || got.TreeSize != sth4.TreeSize || got.Timestamp != sth4.Timestamp || got.SHA256RootHash != sth4.SHA256RootHash ||
		!bytes.Equal(got.TreeHeadSignature.Signature, sth4.TreeHeadSignature.Signature) || got.LogID != sth4.LogID {
		t.Fatalf("TreeHead = %+v, %v; want %+v", got, err, sth4)
	}
	if err := translog.VerifySTH(signer.Public(), got); err != nil {
		t.Fatalf("saved tree head no longer verifies: %v", err)
	}
	c, l := logged(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	st5, err := s.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A tree of size 5 that shares the first 4 entries but not the 5th.
	_, lOther := logged(t, "spiffe://example.org/b")
	other, err := st.Append([][]byte{lOther.Hash}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forked := sign(other, logTS+20)
	beyond, err := st5.Append([][]byte{lOther.Hash}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		sth  *ct.SignedTreeHead
	}{
		{"beyond the log", sign(beyond, logTS+30)},
		{"smaller than the saved one", sign(at2, logTS+30)},
		{"same size, older", sign(st, logTS+5)},
		{"root of another tree", forked},
	} {
		if err := s.SaveTreeHead(ctx, bad.sth); !errors.Is(err, store.ErrTreeHead) {
			t.Errorf("SaveTreeHead(%s): err = %v, want ErrTreeHead", bad.name, err)
		}
	}
	sth5 := sign(st5, logTS+40)
	if err := s.SaveTreeHead(ctx, sth5); err != nil {
		t.Fatalf("SaveTreeHead(newer): %v", err)
	}
	if got, err := s.TreeHead(ctx); err != nil || got.TreeSize != 5 {
		t.Fatalf("TreeHead = %+v, %v; want size 5", got, err)
	}
}
