package logsign_test

// The signer on a store shared by replicas that signs each batch's tree
// head in the batch's transaction (store/etcd with a BatchSigner).
// Identifiers start with logE.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/translog"
)

// logEOpen opens the store of a replica that signs its batches' tree heads
// with batches.
func logEOpen(t *testing.T, c *etcdtest.Cluster, batches *logsign.BatchSigner) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: c.Endpoints(), Prefix: "/loge", MaxTxnOps: 1024, TreeHeads: batches})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// logENewLog opens a replica's store and starts its signer.
func logENewLog(t *testing.T, c *etcdtest.Cluster, key *translog.Signer) (*etcd.Store, *logsign.Signer) {
	t.Helper()
	batches := logsign.NewBatchSigner(key, nil)
	s := logEOpen(t, c, batches)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := logsign.New(ctx, logsign.Options{Store: s, Key: key, Batches: batches})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, l
}

// logEIssue stores a certificate with its log entry through s.
func logEIssue(t *testing.T, s *etcd.Store) (uint64, *translog.Leaf) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 1
	now := time.Now()
	c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now, NotAfter: now.Add(time.Hour), DER: append([]byte{0x30, 0x81}, b...)}
	leaf, err := translog.NewLeaf(c.DER, uint64(now.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: leaf}
	if err := s.Issue(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	return iss.Certificate.LogIndex, leaf
}

// TestLogCommitSignerReplicas: two replicas' logs on one etcd prefix,
// issuing at once. Every receipt is proven by a tree head the log key
// signed; once the other replica's tree heads are offered (as the store's
// watch does in the daemon), both serve the same tree head, the stored
// one; a tree head signed with another key is not served.
func TestLogCommitSignerReplicas(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	sa, la := logENewLog(t, cluster, signer)
	sb, lb := logENewLog(t, cluster, signer)
	ctx := context.Background()
	const n = 60
	var wg sync.WaitGroup
	for i := range n {
		s, l := sa, la
		if i%2 == 1 {
			s, l = sb, lb
		}
		wg.Go(func() {
			idx, leaf := logEIssue(t, s)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			rc, err := l.Receipt(rctx, idx, leaf)
			if err != nil {
				t.Errorf("receipt of %d: %v", idx, err)
				return
			}
			sth, err := rc.STH.ToSignedTreeHead()
			if err != nil {
				t.Error(err)
				return
			}
			if err := translog.VerifySTH(&key.PublicKey, sth); err != nil {
				t.Error(err)
			}
			if err := translog.VerifyInclusion(leaf.Hash, idx, rc.TreeSize, rc.InclusionProof, rc.RootHash); err != nil || sth.TreeSize != rc.TreeSize {
				t.Errorf("entry %d: %v (tree head size %d, receipt %d)", idx, err, sth.TreeSize, rc.TreeSize)
			}
		})
	}
	wg.Wait()
	stored, err := sa.TreeHead(ctx)
	if err != nil || stored.TreeSize != n {
		t.Fatalf("stored tree head %+v, %v; want size %d", stored, err, n)
	}
	for _, l := range []*logsign.Signer{la, lb} {
		l.Offer(stored)
		got := l.Latest()
		if got.TreeSize != n || got.Timestamp != stored.Timestamp || !bytes.Equal(got.TreeHeadSignature.Signature, stored.TreeHeadSignature.Signature) {
			t.Fatalf("a replica serves tree head size %d ts %d, not the stored one (size %d ts %d)", got.TreeSize, got.Timestamp, stored.TreeSize, stored.Timestamp)
		}
	}
	// A larger tree head signed by another key is not served; the same
	// one signed by the log key is.
	idx, _ := logEIssue(t, sa)
	st, err := sa.LogState(ctx)
	if err != nil || st.Size() != idx+1 {
		t.Fatalf("log state %d, %v", st.Size(), err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, err := translog.NewSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Sign(st, stored.Timestamp+1)
	if err != nil {
		t.Fatal(err)
	}
	lb.Offer(forged)
	if got := lb.Latest(); got.TreeSize > n && bytes.Equal(got.TreeHeadSignature.Signature, forged.TreeHeadSignature.Signature) {
		t.Fatal("a tree head signed by another key is served")
	}
	grown, err := sa.TreeHead(ctx)
	if err != nil || grown.TreeSize != n+1 {
		t.Fatalf("stored tree head %+v, %v; want size %d", grown, err, n+1)
	}
	lb.Offer(grown)
	if got := lb.Latest(); got.TreeSize != n+1 {
		t.Fatalf("the stored tree head of size %d offered, the replica serves %d", n+1, got.TreeSize)
	}
	// A smaller one changes nothing.
	lb.Offer(stored)
	if got := lb.Latest(); got.TreeSize != n+1 {
		t.Fatalf("after a smaller tree head was offered the replica serves %d", got.TreeSize)
	}
}

// logECommitStore is a bbolt store whose LogState can be held and made
// to fail: the tree head signer's own round running while commits hand
// tree heads over (the test hands them to the BatchSigner, as store/etcd
// does).
type logECommitStore struct {
	*bolt.Store
	hold    atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (s *logECommitStore) LogState(ctx context.Context) (translog.State, error) {
	if s.hold.Load() {
		s.held <- struct{}{}
		<-s.release
		return translog.State{}, errors.New("etcd: request timed out")
	}
	return s.Store.LogState(ctx)
}

// TestLogRefreshNeverGoesBack: a signer round that started before a
// commit handed over a larger tree head, and then failed, does not put
// the smaller one back: get-sth never goes back.
func TestLogRefreshNeverGoesBack(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	s := &logECommitStore{Store: b, held: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	batches := logsign.NewBatchSigner(signer, nil)
	l, err := logsign.New(ctx, logsign.Options{Store: s, Key: signer, Batches: batches})
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer close(done); l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s.hold.Store(true)
	l.Offer(nil) // changes may have been missed: the signer reads the log
	<-s.held
	leaves := make([][]byte, 5)
	for i := range leaves {
		leaves[i] = bytes.Repeat([]byte{byte(i + 1)}, 32)
	}
	st, err := translog.State{}.Append(leaves, nil)
	if err != nil {
		t.Fatal(err)
	}
	sth, err := signer.Sign(st, uint64(time.Now().UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	batches.TreeHeadCommitted(sth) // a commit hands its tree head over
	if got := l.Latest().TreeSize; got != 5 {
		t.Fatalf("after the commit: size %d, want 5", got)
	}
	s.hold.Store(false)
	close(s.release) // the signer's read fails
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got := l.Latest().TreeSize; got != 5 {
			t.Fatalf("get-sth went back from size 5 to %d", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLogStartUnderLoad: a replica's log starts while another replica
// appends as fast as it can. The log state and the saved tree head are
// read at one revision, so a start never takes the other replica's
// newest tree head for entries its own read of the state lacks ("the
// store lost entries").
func TestLogStartUnderLoad(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := logENewLog(t, cluster, signer)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				logEIssue(t, sa)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	deadline := time.Now().Add(3 * time.Second)
	starts := 0
	for ; starts < 40 && time.Now().Before(deadline); starts++ {
		sb, err := etcd.Open(ctx, etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/loge", MaxTxnOps: 1024, MustExist: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = logsign.New(ctx, logsign.Options{Store: sb, Key: signer})
		sb.Close()
		if err != nil {
			t.Fatalf("start %d under load: %v", starts, err)
		}
	}
	t.Logf("%d starts", starts)
}
