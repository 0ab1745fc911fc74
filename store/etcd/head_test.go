package etcd

import (
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestLearnHeadWakesOnlyOnNewer: a committer waiting for its turn is woken
// when the head moves, not when the same revision is reported again (its
// own commit, seen by the watch after the transaction's answer).
func TestLearnHeadWakesOnlyOnNewer(t *testing.T) {
	s := &Store{headCh: make(chan struct{}, 1)}
	kv := func(rev int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte("/p/log/state"), ModRevision: rev}
	}
	woken := func() bool {
		select {
		case <-s.headCh:
			return true
		default:
			return false
		}
	}
	s.learnHead(kv(5), kv(5))
	if !woken() {
		t.Fatal("the first head learnt did not wake")
	}
	s.learnHead(kv(5), kv(5))
	if woken() {
		t.Fatal("the same revision again woke the committer")
	}
	s.learnHead(kv(4), nil)
	if woken() || s.head.Load().state.ModRevision != 5 {
		t.Fatal("an older revision replaced the head or woke the committer")
	}
	s.learnHead(kv(6), nil)
	if !woken() || s.head.Load().state.ModRevision != 6 || s.head.Load().sth.ModRevision != 5 {
		t.Fatalf("a newer state: head %+v", s.head.Load())
	}
}

// TestAwaitTurn: a replica lets as many other replicas' commits go first
// as came between its last two (each counted once, however it is seen),
// and stops waiting when the store closes.
func TestAwaitTurn(t *testing.T) {
	defer func(d time.Duration) { maxTurnWait = d }(maxTurnWait)
	maxTurnWait = time.Minute
	s := &Store{headCh: make(chan struct{}, 1), quit: make(chan struct{})}
	s.commitTime.Store(int64(time.Minute))
	// Two other commits came between this replica's last two.
	s.otherCommitted(3)
	s.otherCommitted(4)
	s.turnNeed.Store(max(1, s.othersSince.Swap(0)))
	if s.turnNeed.Load() != 2 {
		t.Fatalf("turn need %d, want 2", s.turnNeed.Load())
	}
	done := make(chan struct{})
	go func() { defer close(done); s.awaitTurn() }()
	kv := func(rev int64) *mvccpb.KeyValue { return &mvccpb.KeyValue{ModRevision: rev} }
	waiting := func(what string) {
		t.Helper()
		select {
		case <-done:
			t.Fatalf("the turn came %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	waiting("with no other commit")
	s.otherCommitted(6)
	s.learnHead(kv(6), nil)
	waiting("after one other commit of two")
	s.otherCommitted(6) // the same commit, seen again (watch and Else)
	s.learnHead(kv(6), nil)
	waiting("after the same commit seen twice")
	s.otherCommitted(7)
	s.learnHead(kv(7), nil)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the turn never came after two other commits")
	}
	// Closing ends a wait.
	s.othersSince.Store(0)
	done = make(chan struct{})
	go func() { defer close(done); s.awaitTurn() }()
	waiting("before the close")
	close(s.quit)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("awaitTurn outlived Close")
	}
}
