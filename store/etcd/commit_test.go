package etcd_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
)

// TestStaleTokenHintRefused: replica B read a join token (its attestation)
// before replica A consumed it; B's issuance, sent on what it read without
// reading again, must not use the token a second time.
func TestStaleTokenHintRefused(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/hint", 0), open(t, cluster, "/hint", 0)
	ctx := context.Background()
	tok := createToken(t, a, "hinted")
	// Each replica knows the log's head from a commit of its own, so
	// its next issuance is sent on hints, without a read.
	for _, s := range []*etcd.Store{a, b} {
		c, l := logged(t)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*etcd.Store{a, b} {
		rec, err := s.JoinToken(ctx, tok)
		if err != nil || rec.UsedBy != "" {
			t.Fatalf("JoinToken: %+v, %v", rec, err)
		}
	}
	c1, l1 := logged(t)
	if err := a.Issue(ctx, &store.Issuance{Certificate: c1, Now: now, LogLeaf: l1, JoinToken: tok}); err != nil {
		t.Fatal(err)
	}
	c2, l2 := logged(t)
	if err := b.Issue(ctx, &store.Issuance{Certificate: c2, Now: now, LogLeaf: l2, JoinToken: tok}); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("second use through the replica holding a stale read: err = %v, want ErrTokenInvalid", err)
	}
	if _, err := b.Certificate(ctx, c2.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused certificate was stored: %v", err)
	}
	// A serial expected new but taken is refused too (its hint says
	// absent).
	c3, l3 := logged(t)
	c3.Serial = c1.Serial
	if err := b.Issue(ctx, &store.Issuance{Certificate: c3, Now: now, LogLeaf: l3}); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("duplicate serial: err = %v, want ErrDuplicateSerial", err)
	}
	st, err := b.LogState(ctx)
	if err != nil || st.Size() != 3 {
		t.Fatalf("log size %d, %v; want 3", st.Size(), err)
	}
}

// TestIssueWithoutReads: a replica alone sends each issuance after its
// first on what it knows (hints, and the head it committed), without
// reading first.
func TestIssueWithoutReads(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	s := open(t, cluster, "/nr", 0)
	ctx := context.Background()
	for range 10 {
		c, l := logged(t)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Commits != 10 || st.Reads != 1 || st.Conflicts != 0 {
		t.Fatalf("stats %+v; want 10 commits, 1 read (the first), no conflict", st)
	}
}

// signerRecorder is an etcd.TreeHeadSigner recording what was signed and
// handed back.
type signerRecorder struct {
	signer *translog.Signer
	fail   atomic.Bool // sign fails while set
	mu     sync.Mutex
	signed []*ct.SignedTreeHead
	minTS  []uint64
}

func (r *signerRecorder) SignTreeHead(st translog.State, minTS uint64) (*ct.SignedTreeHead, error) {
	if r.fail.Load() {
		return nil, errors.New("the log key is unavailable")
	}
	r.mu.Lock()
	r.minTS = append(r.minTS, minTS)
	r.mu.Unlock()
	return r.signer.Sign(st, max(uint64(time.Now().UnixMilli()), minTS))
}

func (r *signerRecorder) TreeHeadCommitted(sth *ct.SignedTreeHead) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signed = append(r.signed, sth)
}

// openSigning opens a store on prefix that signs its batches' tree heads
// with r.
func openSigning(t *testing.T, c *etcdtest.Cluster, prefix string, r etcd.TreeHeadSigner) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix, MaxTxnOps: 1024, TreeHeads: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// largest returns the largest tree head handed back so far.
func (r *signerRecorder) largest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n uint64
	for _, s := range r.signed {
		n = max(n, s.TreeSize)
	}
	return n
}

func newLogSigner(t *testing.T) *translog.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// TestCommitSignerTwoReplicas: two replicas with commit signers issuing
// at once. Each issuance's tree head is handed back before Issue returns;
// no size gets two tree heads (whichever replica signed); timestamps never
// go back; the stored tree head is the last one, and verifies.
func TestCommitSignerTwoReplicas(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	signer := newLogSigner(t)
	ra, rb := &signerRecorder{signer: signer}, &signerRecorder{signer: signer}
	a, b := openSigning(t, cluster, "/cs", ra), openSigning(t, cluster, "/cs", rb)
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		s, r := a, ra
		if i%2 == 1 {
			s, r = b, rb
		}
		wg.Go(func() {
			c, l := logged(t)
			iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
			if err := s.Issue(ctx, iss); err != nil {
				t.Errorf("Issue: %v", err)
				return
			}
			if got := r.largest(); got <= iss.Certificate.LogIndex {
				t.Errorf("Issue returned entry %d before a tree head covering it was handed back (largest %d)", iss.Certificate.LogIndex, got)
			}
		})
	}
	wg.Wait()
	all := append(slices.Clone(ra.signed), rb.signed...)
	slices.SortFunc(all, func(x, y *ct.SignedTreeHead) int { return int(x.TreeSize) - int(y.TreeSize) })
	for i := 1; i < len(all); i++ {
		if all[i].TreeSize == all[i-1].TreeSize {
			t.Fatalf("two tree heads committed for size %d", all[i].TreeSize)
		}
		if all[i].Timestamp < all[i-1].Timestamp {
			t.Fatalf("tree head of size %d timestamped %d, before size %d's %d", all[i].TreeSize, all[i].Timestamp, all[i-1].TreeSize, all[i-1].Timestamp)
		}
	}
	st, err := a.LogState(ctx)
	if err != nil || st.Size() != n {
		t.Fatalf("log size %d, %v; want %d", st.Size(), err, n)
	}
	if last := all[len(all)-1]; last.TreeSize != n {
		t.Fatalf("the last tree head handed back has size %d, want %d", last.TreeSize, n)
	}
	stored, err := b.TreeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored.TreeSize != n || !bytes.Equal(stored.SHA256RootHash[:], st.Root()) {
		t.Fatalf("stored tree head size %d root %x; want %d %x", stored.TreeSize, stored.SHA256RootHash[:], n, st.Root())
	}
	if err := translog.VerifySTH(signer.Public(), stored); err != nil {
		t.Fatal(err)
	}
	// Each minimum timestamp handed to a signer was that of a tree head
	// committed before.
	for _, ts := range append(ra.minTS, rb.minTS...) {
		if ts > all[len(all)-1].Timestamp {
			t.Fatalf("minimum timestamp %d is later than any tree head committed", ts)
		}
	}
}

// TestCommitSignerFailure: a batch whose tree head cannot be signed is
// committed without one, and the store cues its caller (OnLogAppend) to
// sign as it would without a commit signer.
func TestCommitSignerFailure(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	var cued atomic.Int64
	r := &signerRecorder{signer: newLogSigner(t)}
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/csf", MaxTxnOps: 1024,
		OnLogAppend: func() { cued.Add(1) }, TreeHeads: r})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	issue := func() {
		c, l := logged(t)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	issue()
	if cued.Load() != 0 || r.largest() != 1 {
		t.Fatalf("signed in the commit: cued %d times, largest tree head %d", cued.Load(), r.largest())
	}
	r.fail.Store(true)
	issue()
	if cued.Load() != 1 {
		t.Fatalf("a batch committed without a tree head cued the caller %d times, want 1", cued.Load())
	}
	if sth, err := s.TreeHead(ctx); err != nil || sth.TreeSize != 1 {
		t.Fatalf("stored tree head %+v, %v; want the one of size 1", sth, err)
	}
	r.fail.Store(false)
	issue()
	if sth, err := s.TreeHead(ctx); err != nil || sth.TreeSize != 3 {
		t.Fatalf("stored tree head %+v, %v; want size 3", sth, err)
	}
}

// TestNodesCachedAndRead: the nodes a replica serves for proofs, from its
// cache (what it wrote, and the tree's border) or read from etcd (what the
// other replica wrote), are the stored tree's: every inclusion proof at
// every size verifies, through each replica and through a fresh one.
func TestNodesCachedAndRead(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/nc", 0), open(t, cluster, "/nc", 0)
	ctx := context.Background()
	const n = 40
	var hashes [][]byte
	for i := range n {
		s := a
		if i%3 == 2 {
			s = b
		}
		c, l := logged(t)
		iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
		if err := s.Issue(ctx, iss); err != nil {
			t.Fatal(err)
		}
		if iss.Certificate.LogIndex != uint64(i) {
			t.Fatalf("index %d, want %d", iss.Certificate.LogIndex, i)
		}
		hashes = append(hashes, l.Hash)
	}
	fresh := open(t, cluster, "/nc", 0)
	for _, s := range []*etcd.Store{a, b, fresh} {
		for size := uint64(1); size <= n; size++ {
			ref, err := translog.State{}.Append(hashes[:size], nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range size {
				p, err := translog.InclusionProof(ctx, s, i, size)
				if err != nil {
					t.Fatal(err)
				}
				if err := translog.VerifyInclusion(hashes[i], i, size, p, ref.Root()); err != nil {
					t.Fatalf("entry %d at size %d: %v", i, size, err)
				}
			}
		}
	}
	if _, err := a.Nodes(ctx, []compact.NodeID{compact.NewNodeID(0, n+5)}); !errors.Is(err, translog.ErrNodeNotFound) {
		t.Fatalf("a node beyond the log: err = %v, want ErrNodeNotFound", err)
	}
}

// TestCommitSignerSlow: a log key that does not answer (a hung HSM) does
// not stop writes: past a quarter of the request timeout the batch
// commits without a tree head and the caller is cued to sign on its own.
func TestCommitSignerSlow(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	var cued atomic.Int64
	hung := make(chan struct{})
	defer close(hung)
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/slow", MaxTxnOps: 1024,
		RequestTimeout: 800 * time.Millisecond, OnLogAppend: func() { cued.Add(1) }, TreeHeads: hungSigner{t, hung}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	start := time.Now()
	c, l := logged(t)
	if err := s.Issue(context.Background(), &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 600*time.Millisecond {
		t.Fatalf("Issue took %s with the log key hung", d)
	}
	if cued.Load() != 1 {
		t.Fatalf("cued %d times, want 1", cued.Load())
	}
	if _, err := s.TreeHead(context.Background()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a tree head was stored: %v", err)
	}
}

// hungSigner is a log key that does not answer until its channel is
// closed.
type hungSigner struct {
	t    *testing.T
	hung chan struct{}
}

func (h hungSigner) SignTreeHead(translog.State, uint64) (*ct.SignedTreeHead, error) {
	<-h.hung
	return nil, errors.New("unplugged")
}

func (h hungSigner) TreeHeadCommitted(*ct.SignedTreeHead) { h.t.Error("a tree head was handed back") }
