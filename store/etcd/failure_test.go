package etcd_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// hookState drives etcd.SetCommitHook: each write transaction waits for
// release (when set), then is sent or not, and its outcome replaced by a
// timeout when told.
type hookState struct {
	mu      sync.Mutex
	calls   int
	hold    chan struct{} // the first transaction waits until it is closed
	send    func(call int) bool
	timeout func(call int) bool
	err     func(call int) error
}

func (h *hookState) hook(send func() (bool, error)) (bool, error) {
	h.mu.Lock()
	call := h.calls
	h.calls++
	h.mu.Unlock()
	if call == 0 && h.hold != nil {
		<-h.hold
	}
	if h.err != nil {
		if err := h.err(call); err != nil {
			return false, err
		}
	}
	ok, err := true, error(nil)
	if h.send == nil || h.send(call) {
		ok, err = send()
	}
	if h.timeout != nil && h.timeout(call) {
		return false, context.DeadlineExceeded
	}
	return ok, err
}

func createToken(t *testing.T, s *etcd.Store, name string) []byte {
	t.Helper()
	raw := sha256.Sum256([]byte(name))
	if err := s.CreateJoinTokens(context.Background(), []store.JoinToken{{Hash: raw[:], SPIFFEID: "spiffe://example.org/a", Provisioner: "join",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	return raw[:]
}

// TestUnknownOutcomeCommitted: the transaction committed but the client
// was told it timed out. Issue finds its record and reports success with
// the log index; another issuance of the same batch, refused only
// because the first one consumed the join token, is answered
// "unavailable", not "token invalid" (that refusal rested on a write whose
// outcome was unknown).
func TestUnknownOutcomeCommitted(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	s := open(t, cluster, "/u", 2*time.Second)
	ctx := context.Background()
	tok := createToken(t, s, "u")
	// Fill the log a little, so the index is not zero.
	for range 3 {
		c, l := logged(t)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
			t.Fatal(err)
		}
	}
	h := &hookState{hold: make(chan struct{}), timeout: func(call int) bool { return call == 1 }}
	etcd.SetCommitHook(s, h.hook)
	defer etcd.SetCommitHook(s, nil)
	// Call 0 (a plain issuance) holds the committer while the two
	// issuances sharing the token queue up behind it: they become call 1.
	var wg sync.WaitGroup
	c0, l0 := logged(t)
	wg.Go(func() {
		if err := s.Issue(ctx, &store.Issuance{Certificate: c0, Now: now, LogLeaf: l0}); err != nil {
			t.Errorf("blocker: %v", err)
		}
	})
	time.Sleep(100 * time.Millisecond)
	issA, issB := &store.Issuance{JoinToken: tok, Now: now}, &store.Issuance{JoinToken: tok, Now: now}
	ca, leafA := logged(t)
	cb, leafB := logged(t)
	issA.Certificate, issA.LogLeaf = ca, leafA
	issB.Certificate, issB.LogLeaf = cb, leafB
	var errA, errB error
	wg.Go(func() { errA = s.Issue(ctx, issA) })
	time.Sleep(50 * time.Millisecond)
	wg.Go(func() { errB = s.Issue(ctx, issB) })
	time.Sleep(100 * time.Millisecond)
	close(h.hold)
	wg.Wait()
	if errA != nil {
		t.Fatalf("the issuance whose transaction committed (outcome reported unknown): %v, want success", errA)
	}
	got, err := s.Certificate(ctx, ca.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if issA.Certificate.LogIndex != got.LogIndex || issA.Certificate.LogTimestamp != got.LogTimestamp || got.LogTimestamp != leafA.Timestamp() || got.LogIndex < 3 {
		t.Fatalf("Issue reported index %d timestamp %d; the record has %d, %d", issA.Certificate.LogIndex, issA.Certificate.LogTimestamp, got.LogIndex, got.LogTimestamp)
	}
	if !errors.Is(errB, store.ErrUnavailable) {
		t.Fatalf("the issuance refused only because of the other's pending token use: %v, want ErrUnavailable", errB)
	}
	if _, err := s.Certificate(ctx, cb.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the second certificate: %v, want not found", err)
	}
}

// TestUnknownOutcomeNotCommitted: the transaction never reached etcd and
// the client timed out: Issue reports unavailable, and the retry (the
// token unspent) succeeds.
func TestUnknownOutcomeNotCommitted(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	s := open(t, cluster, "/n", 2*time.Second)
	ctx := context.Background()
	tok := createToken(t, s, "n")
	h := &hookState{send: func(call int) bool { return call != 0 }, timeout: func(call int) bool { return call == 0 }}
	etcd.SetCommitHook(s, h.hook)
	defer etcd.SetCommitHook(s, nil)
	c, l := logged(t)
	iss := &store.Issuance{Certificate: c, JoinToken: tok, Now: now, LogLeaf: l}
	if err := s.Issue(ctx, iss); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Issue whose transaction was lost: %v, want ErrUnavailable", err)
	}
	if err := s.Issue(ctx, iss); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

// TestQuorumLossQueuedWrites: without quorum, 64 concurrent writes (many
// transactions at the default max_txn_ops) are all answered
// "unavailable" about the request timeout after they were made, not one
// timeout per transaction queued before theirs.
func TestQuorumLossQueuedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member cluster")
	}
	cluster := etcdtest.New(t, 3)
	const timeout = time.Second
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/ql", RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	c, l := logged(t)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	cluster.Stop(1)
	cluster.Stop(2)
	start := time.Now()
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for i := range 64 {
		wg.Go(func() {
			c, l := logged(t)
			iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: l, Once: []string{"q" + c.Serial}}
			err := s.Issue(ctx, iss)
			d := time.Since(start)
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("write %d: %v, want ErrUnavailable", i, err)
			}
			for {
				if old := slowest.Load(); int64(d) <= old || slowest.CompareAndSwap(old, int64(d)) {
					break
				}
			}
		})
	}
	wg.Wait()
	d := time.Duration(slowest.Load())
	t.Logf("slowest answer %s (request timeout %s)", d, timeout)
	if d > timeout*3/2 {
		t.Fatalf("the last write without quorum was answered after %s; the request timeout is %s", d, timeout)
	}
}

// TestCloseWithFullQueue: Close returns while writers are blocked on a
// full queue and the committer's transaction fails.
func TestCloseWithFullQueue(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/c", MaxTxnOps: 1024, MaxBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := &hookState{hold: make(chan struct{}), err: func(int) error { return errors.New("boom") }}
	etcd.SetCommitHook(s, h.hook)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			c, l := logged(t)
			err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l})
			if err == nil || !strings.Contains(err.Error(), "boom") && !errors.Is(err, store.ErrClosed) {
				t.Errorf("Issue: %v, want boom or closed", err)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the queue fills; writers block on it
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(100 * time.Millisecond) // Close waits for the committer
	close(h.hold)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return (deadlock with writers blocked on the full queue)")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writers still waiting after Close")
	}
}

// TestMinTxnOps: Open refuses a max_txn_ops below what one issuance may
// need; at the minimum (cluster and store), concurrent issuances commit
// (in several transactions), and one that cannot fit even alone is
// refused with a clear error instead of etcd's "too many operations".
func TestMinTxnOps(t *testing.T) {
	cluster := etcdtest.NewWith(t, 1, etcdtest.Options{MaxTxnOps: etcd.MinTxnOps})
	if _, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/m", MaxTxnOps: etcd.MinTxnOps - 1}); err == nil ||
		!strings.Contains(err.Error(), "max_txn_ops") {
		t.Fatalf("Open with max_txn_ops %d: %v, want a refusal", etcd.MinTxnOps-1, err)
	}
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/m", MaxTxnOps: etcd.MinTxnOps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 140 {
		wg.Go(func() {
			c, l := logged(t)
			if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l, Once: []string{"a" + c.Serial, "b" + c.Serial}}); err != nil {
				t.Errorf("Issue %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	st, err := s.LogState(ctx)
	if err != nil || st.Size() != 140 {
		t.Fatalf("log size %d, %v; want 140", st.Size(), err)
	}
	c, l := logged(t)
	var once []string
	for i := range 100 {
		once = append(once, fmt.Sprintf("%s-%d", c.Serial, i))
	}
	err = s.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: l, Once: once})
	if err == nil || !strings.Contains(err.Error(), "max_txn_ops") || strings.Contains(err.Error(), "too many operations") {
		t.Fatalf("an issuance too large for one transaction: %v, want a max_txn_ops error", err)
	}
	c2, l2 := logged(t)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c2, Now: now, LogLeaf: l2}); err != nil {
		t.Fatalf("the next issuance: %v", err)
	}
}

// TestWrapUnavailable: the errors of a cluster that cannot take a write for
// now (a full quota, too many requests, a lost leader, timeouts) are
// store.ErrUnavailable (503), not internal errors.
func TestWrapUnavailable(t *testing.T) {
	for _, err := range []error{rpctypes.ErrNoSpace, rpctypes.ErrTooManyRequests, rpctypes.ErrUnhealthy, rpctypes.ErrNoLeader,
		rpctypes.ErrNotLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrStopped,
		rpctypes.ErrGRPCNoSpace, context.DeadlineExceeded, errors.New("rpc error: code = Unknown desc = raft proposal dropped")} {
		got := etcd.Wrap(err)
		if !errors.Is(got, store.ErrUnavailable) || !errors.Is(got, context.DeadlineExceeded) {
			t.Errorf("wrap(%v) = %v, want ErrUnavailable", err, got)
		}
	}
	if got := etcd.Wrap(rpctypes.ErrNoSpace); !strings.Contains(got.Error(), "quota") {
		t.Errorf("the NOSPACE error does not name the quota: %v", got)
	}
	for _, err := range []error{rpctypes.ErrCompacted, rpctypes.ErrPermissionDenied, rpctypes.ErrTooManyOps} {
		if got := etcd.Wrap(err); errors.Is(got, store.ErrUnavailable) {
			t.Errorf("wrap(%v) = %v, want an error other than ErrUnavailable", err, got)
		}
	}
}

// fakeWatcher replays, for the revocation prefix, one watch that reports
// its creation and one event at the store's current header revision (as
// etcd does while it sends a backlog), then breaks; it records the
// revision each watch starts from.
type fakeWatcher struct {
	clientv3.Watcher
	prefix string
	mu     sync.Mutex
	revs   []int64
}

func (f *fakeWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse, 4)
	if key != f.prefix {
		return ch // the other watches see nothing
	}
	op := clientv3.OpGet(key, opts...)
	f.mu.Lock()
	f.revs = append(f.revs, op.Rev())
	first := len(f.revs) == 1
	f.mu.Unlock()
	if first {
		const current = 5000 // far ahead: the backlog is not sent yet
		ev := &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key + "abcd/01"), Value: []byte(`{"serial":"01"}`), ModRevision: op.Rev()}}
		ch <- clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: current}, Created: true}
		ch <- clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: current}, Events: []*clientv3.Event{ev}}
		close(ch) // the watch breaks
	}
	return ch
}

// TestWatchResumesAfterLastEvent: a broken watch resumes after the last
// event it delivered, not after the header revision of the responses,
// which during a backlog is the store's current one (that would skip
// revocations without a resync).
func TestWatchResumesAfterLastEvent(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	fw := &fakeWatcher{Watcher: cli.Watcher, prefix: "/wr/rev/"}
	cli.Watcher = fw
	s, err := etcd.Open(context.Background(), etcd.Options{Client: cli, Prefix: "/wr", MaxTxnOps: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan store.Change, 10)
	go func() { _ = s.Watch(ctx, func(c store.Change) { got <- c }) }()
	select {
	case c := <-got:
		if c.Kind != store.ChangeRevoked {
			t.Fatalf("change %v, want a revocation", c.Kind)
		}
	case <-ctx.Done():
		t.Fatal("no change reported")
	}
	for {
		fw.mu.Lock()
		revs := slices.Clone(fw.revs)
		fw.mu.Unlock()
		if len(revs) >= 2 {
			if revs[1] != revs[0]+1 {
				t.Fatalf("the watch started at %d, delivered the event at %d and resumed at %d; want %d", revs[0], revs[0], revs[1], revs[0]+1)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the watch did not resume")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
