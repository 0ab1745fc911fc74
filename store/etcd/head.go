package etcd

// The log's head: the log state key and the tree head key, which every
// batch that appends compares and rewrites. A replica keeps them as last
// known (its own commits, what a lost race returned, and a watch on them)
// so that it can commit a batch of hinted writes without reading first,
// and it takes turns with the other replicas: the one that appended last
// lets another that is appending too go first, for about one commit's
// time, instead of racing it. Two replicas that race lose half of their
// transactions, and each lost one still goes through raft on every
// member.

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// otherActive is how recently another replica must have appended for
// this one to wait for its turn.
const otherActive = 50 * time.Millisecond

// maxTurnWait bounds the wait for the other replicas' commits (a variable
// for tests).
var maxTurnWait = 20 * time.Millisecond

// logHead is the log state key and the tree head key as last known, with
// their mod revisions (nil: absent or unknown).
type logHead struct{ state, sth *mvccpb.KeyValue }

// newer returns kv or known, whichever has the later mod revision (known
// when they are of the same one).
func newer(kv, known *mvccpb.KeyValue) *mvccpb.KeyValue {
	if known != nil && (kv == nil || known.ModRevision >= kv.ModRevision) {
		return known
	}
	return kv
}

// learnHead records the log's head keys seen at a later revision than
// the known ones, and wakes a committer waiting for its turn.
func (s *Store) learnHead(state, sth *mvccpb.KeyValue) {
	for {
		old := s.head.Load()
		h := &logHead{state: state, sth: sth}
		if old != nil {
			h.state, h.sth = newer(state, old.state), newer(sth, old.sth)
			if h.state == old.state && h.sth == old.sth {
				return
			}
		}
		if s.head.CompareAndSwap(old, h) {
			select {
			case s.headCh <- struct{}{}:
			default:
			}
			return
		}
	}
}

// learnHead records the log's head keys after the batch's transaction:
// those it wrote, or those the transaction's Else branch read when it lost
// the race (headMoved then tells whether they are what it lost to).
func (b *batch) learnHead(resp *clientv3.TxnResponse) {
	s := b.s
	if resp.Succeeded {
		state := &mvccpb.KeyValue{Key: []byte(s.k.logState()), Value: b.overlay[s.k.logState()], ModRevision: resp.Header.Revision}
		var sth *mvccpb.KeyValue
		if b.sth != nil {
			sth = &mvccpb.KeyValue{Key: []byte(s.k.logSTH()), Value: b.overlay[s.k.logSTH()], ModRevision: resp.Header.Revision}
		}
		s.ownRev.Store(resp.Header.Revision)
		// Turns: the other replicas' commits since this one's last
		// are how many to let go before its next (at least one while
		// another one appends).
		s.turnNeed.Store(max(1, s.othersSince.Swap(0)))
		s.learnHead(state, sth)
		return
	}
	var kvs [2]*mvccpb.KeyValue
	for i, r := range resp.Responses {
		if k := r.GetResponseRange().Kvs; len(k) > 0 && i < len(kvs) {
			kvs[i] = k[0]
		}
	}
	if kvs[0] != nil && kvs[0].ModRevision != b.stateRev {
		// Another replica appends: follow the head as it moves.
		s.otherCommitted(kvs[0].ModRevision)
		s.headWatch.Do(func() {
			s.headWG.Add(1)
			go s.watchHead(s.headCtx)
		})
	}
	s.learnHead(kvs[0], kvs[1])
	b.headMoved = kvs[0] != nil && kvs[0].ModRevision != b.stateRev
	if rev, ok := b.cmps[s.k.logSTH()]; ok && kvs[1] != nil && kvs[1].ModRevision != rev {
		b.headMoved = true
	}
}

// watchHead follows the log's head keys, as other replicas commit, until
// ctx is done. A broken watch is started again; missing changes only
// costs a lost race.
func (s *Store) watchHead(ctx context.Context) {
	defer s.headWG.Done()
	// [P/log/s, P/log/t) holds exactly P/log/state and P/log/sth.
	from, to := s.k.p+"/log/s", s.k.p+"/log/t"
	var next int64
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithRange(to)}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, from, opts...)
	watch:
		for {
			var resp clientv3.WatchResponse
			var ok bool
			select {
			case resp, ok = <-wch:
			case <-ctx.Done():
			}
			if !ok {
				break watch
			}
			if resp.CompactRevision > 0 || resp.Err() != nil {
				next = 0
				break watch
			}
			var state, sth *mvccpb.KeyValue
			for _, ev := range resp.Events {
				next = ev.Kv.ModRevision + 1
				if ev.Type != mvccpb.PUT {
					continue
				}
				switch string(ev.Kv.Key) {
				case s.k.logState():
					state = ev.Kv
				case s.k.logSTH():
					sth = ev.Kv
				}
			}
			// committing first: the committer stores ownRev before
			// it clears sending, so one of the two tells an own commit.
			if state != nil && !s.committing(state) && state.ModRevision > s.ownRev.Load() {
				s.otherCommitted(state.ModRevision)
			}
			s.learnHead(state, sth)
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// committing reports whether state is the log state the transaction in
// flight writes (its response may come after the watch reports it).
func (s *Store) committing(state *mvccpb.KeyValue) bool {
	p := s.sending.Load()
	return p != nil && string(*p) == string(state.Value)
}

// otherCommitted counts a commit of another replica (its revision), once.
func (s *Store) otherCommitted(rev int64) {
	s.otherAt.Store(time.Now().UnixNano())
	for {
		last := s.otherRev.Load()
		if rev <= last {
			return
		}
		if s.otherRev.CompareAndSwap(last, rev) {
			s.othersSince.Add(1)
			return
		}
	}
}

// awaitTurn, before a batch that appends, while other replicas append
// too, lets as many of their commits go first as came between this
// replica's last two (one with two replicas: they alternate; with more,
// a round robin settles), waiting at most about that many commits' time.
func (s *Store) awaitTurn() {
	select {
	case <-s.headCh: // stale wake-ups
	default:
	}
	need := s.turnNeed.Load()
	if s.othersSince.Load() >= need || time.Since(time.Unix(0, s.otherAt.Load())) > otherActive {
		return
	}
	wait := min(time.Duration(need+1)*time.Duration(s.commitTime.Load()), maxTurnWait)
	t := time.NewTimer(wait)
	defer t.Stop()
	for s.othersSince.Load() < need {
		select {
		case <-s.headCh:
		case <-t.C:
			return
		case <-s.quit:
			return
		}
	}
}
