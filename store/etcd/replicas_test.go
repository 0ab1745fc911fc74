package etcd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/translog"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, c *etcdtest.Cluster, prefix string, timeout time.Duration) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix, MaxTxnOps: 1024, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func logged(t *testing.T) (store.Certificate, *translog.Leaf) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 1
	c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now, NotAfter: now.Add(time.Hour), DER: append([]byte{0x30, 0x81}, b...)}
	l, err := translog.NewLeaf(c.DER, uint64(now.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	return c, l
}

// TestReplicasShareOneLog: two stores (two replicas) issuing at once on
// one cluster: a shared join token is used once, and the log has one
// history holding exactly the certificates issued, at the indexes each
// replica was told.
//
// It runs with max_txn_ops 1024 (cluster and store), at etcd's default 128
// (batches split to fit), and with a store told 1024 on a cluster at 128,
// so every large batch is refused as too many operations and committed
// write by write.
func TestReplicasShareOneLog(t *testing.T) {
	for _, tc := range []struct {
		name           string
		cluster, store int
	}{{"1024", 1024, 1024}, {"default", etcd.DefaultMaxTxnOps, 0}, {"fallback", etcd.DefaultMaxTxnOps, 1024}} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := etcdtest.NewWith(t, 1, etcdtest.Options{MaxTxnOps: uint(tc.cluster)})
			a, b := openOps(t, cluster, "/r", tc.store), openOps(t, cluster, "/r", tc.store)
			testReplicasShareOneLog(t, a, b)
		})
	}
}

func openOps(t *testing.T, c *etcdtest.Cluster, prefix string, maxOps int) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: c.Endpoints(), Prefix: prefix, MaxTxnOps: maxOps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testReplicasShareOneLog(t *testing.T, a, b *etcd.Store) {
	ctx := context.Background()
	raw := sha256.Sum256([]byte("token"))
	if err := a.CreateJoinTokens(ctx, []store.JoinToken{{Hash: raw[:], SPIFFEID: "spiffe://example.org/a", Provisioner: "join",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	const n = 120
	var mu sync.Mutex
	byIndex := map[uint64][]byte{}
	tokenUses := 0
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			c, l := logged(t)
			iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
			if i%10 == 0 {
				iss.JoinToken = raw[:]
				if i%20 == 0 {
					// As the join token provisioner does: read it
					// first, so the issuance goes on that read
					// (a hint) without reading again.
					if _, err := s.JoinToken(ctx, raw[:]); err != nil {
						t.Errorf("JoinToken: %v", err)
					}
				}
			}
			err := s.Issue(ctx, iss)
			if err != nil {
				if iss.JoinToken == nil || !errors.Is(err, store.ErrTokenInvalid) {
					t.Errorf("Issue %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if iss.JoinToken != nil {
				tokenUses++
			}
			if byIndex[iss.Certificate.LogIndex] != nil {
				t.Errorf("index %d given twice", iss.Certificate.LogIndex)
			}
			byIndex[iss.Certificate.LogIndex] = l.Hash
		})
	}
	wg.Wait()
	if tokenUses != 1 {
		t.Fatalf("the join token was used %d times across two replicas, want 1", tokenUses)
	}
	st, err := b.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := n - n/10 + 1; st.Size() != uint64(want) || len(byIndex) != want {
		t.Fatalf("log size %d, %d issued, want %d", st.Size(), len(byIndex), want)
	}
	hashes := make([][]byte, st.Size())
	for i := range hashes {
		if hashes[i] = byIndex[uint64(i)]; hashes[i] == nil {
			t.Fatalf("log gap at %d", i)
		}
	}
	ref, err := translog.State{}.Append(hashes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ref.Root(), st.Root()) {
		t.Fatal("the stored log's root is not the root of the leaves issued, in index order")
	}
	root, err := translog.RootAt(ctx, a, st.Size())
	if err != nil || !bytes.Equal(root, st.Root()) {
		t.Fatalf("root from stored nodes %x, %v; want %x", root, err, st.Root())
	}
}

// TestPublishTreeHeadConverges: the first tree head published for a size
// wins; the other replica gets it back instead of its own.
func TestPublishTreeHeadConverges(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/p", 0), open(t, cluster, "/p", 0)
	ctx := context.Background()
	signer := newLogSigner(t)
	for range 3 {
		c, l := logged(t)
		if err := a.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sthA, _ := signer.Sign(st, 1000)
	sthB, _ := signer.Sign(st, 1001)
	gotA, err := a.PublishTreeHead(ctx, sthA)
	if err != nil || gotA != sthA {
		t.Fatalf("first publication: %v, %v", gotA, err)
	}
	gotB, err := b.PublishTreeHead(ctx, sthB)
	if err != nil {
		t.Fatal(err)
	}
	if gotB.Timestamp != sthA.Timestamp || !bytes.Equal(gotB.TreeHeadSignature.Signature, sthA.TreeHeadSignature.Signature) {
		t.Fatal("the second replica's tree head of the same size replaced the first")
	}
	// A smaller one adopts the larger stored one.
	small, _ := translog.StateAt(ctx, a, 1)
	sthSmall, _ := signer.Sign(small, 2000)
	if got, err := b.PublishTreeHead(ctx, sthSmall); err != nil || got.TreeSize != 3 {
		t.Fatalf("smaller tree head: got %+v, %v; want the stored size 3", got, err)
	}
	// One the log contradicts is refused.
	bad := *sthB
	bad.TreeSize = 4
	if _, err := a.PublishTreeHead(ctx, &bad); !errors.Is(err, store.ErrTreeHead) {
		t.Fatalf("tree head beyond the log: err = %v, want ErrTreeHead", err)
	}
}

// TestWatchSeesOtherReplica: a revocation, a log append and an anchor
// change made through one store are reported by the other's Watch.
func TestWatchSeesOtherReplica(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/w", 0), open(t, cluster, "/w", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan store.Change, 100)
	go func() { _ = b.Watch(ctx, func(c store.Change) { got <- c }) }()
	time.Sleep(100 * time.Millisecond) // let the watch start; changes before it are not reported
	c, l := logged(t)
	if err := a.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(ctx, c.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateAnchors(ctx, func(s *store.AnchorSet) error { return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[store.ChangeKind]bool{store.ChangeLog: true, store.ChangeRevoked: true, store.ChangeAnchors: true}
	deadline := time.After(5 * time.Second)
	for len(want) > 0 {
		select {
		case ch := <-got:
			if ch.Kind == store.ChangeRevoked && (ch.Revoked == nil || ch.Revoked.Serial != c.Serial || ch.Revoked.IssuerSKI != "abcd" || ch.Revoked.RevocationReason != 1) {
				t.Fatalf("revocation change %+v", ch.Revoked)
			}
			delete(want, ch.Kind)
		case <-deadline:
			t.Fatalf("changes never reported: %v", want)
		}
	}
}

// TestQuorumLoss: with two of three members stopped, writes and reads
// fail within the request timeout with ErrUnavailable (which also wraps
// context.DeadlineExceeded), not hang.
func TestQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member cluster")
	}
	cluster := etcdtest.New(t, 3)
	s := open(t, cluster, "/q", 1500*time.Millisecond)
	ctx := context.Background()
	c, l := logged(t)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	cluster.Stop(1)
	cluster.Stop(2)
	start := time.Now()
	c2, l2 := logged(t)
	err := s.Issue(ctx, &store.Issuance{Certificate: c2, Now: now, LogLeaf: l2})
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Issue without quorum: err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Issue without quorum took %s", d)
	}
	if _, err := s.Certificate(ctx, c.Serial); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("read without quorum: err = %v, want ErrUnavailable", err)
	}
}

// TestPublishTreeHeadTimestampsForward: a replica whose clock is behind
// cannot publish a larger tree head timestamped before the stored one; the
// same tree head signed with the stored timestamp is published.
func TestPublishTreeHeadTimestampsForward(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	a, b := open(t, cluster, "/pt", 0), open(t, cluster, "/pt", 0)
	ctx := context.Background()
	signer := newLogSigner(t)
	issue := func() translog.State {
		c, l := logged(t)
		if err := a.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
		st, err := a.LogState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st1 := issue()
	sth1, _ := signer.Sign(st1, 5000)
	if _, err := a.PublishTreeHead(ctx, sth1); err != nil {
		t.Fatal(err)
	}
	st2 := issue()
	if _, err := b.LogState(ctx); err != nil {
		t.Fatal(err)
	}
	behind, _ := signer.Sign(st2, 4000)
	if _, err := b.PublishTreeHead(ctx, behind); !errors.Is(err, store.ErrTreeHead) {
		t.Fatalf("a larger tree head timestamped before the stored one: %v, want ErrTreeHead", err)
	}
	again, _ := signer.Sign(st2, 5000)
	if got, err := b.PublishTreeHead(ctx, again); err != nil || got != again {
		t.Fatalf("signed again with the stored timestamp: %v, %v", got, err)
	}
	st3 := issue()
	behind3, _ := signer.Sign(st3, 4999)
	if _, err := a.PublishTreeHead(ctx, behind3); !errors.Is(err, store.ErrTreeHead) {
		t.Fatalf("through the replica that last saw an older tree head: %v, want ErrTreeHead", err)
	}
}
