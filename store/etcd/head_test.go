package etcd

import (
	"testing"

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
