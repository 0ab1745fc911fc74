package etcd

// Freshness: how recently this replica is known to have applied every
// revocation committed to the cluster. A cached OCSP "good" is only as
// good as the watch that would have dropped it: a replica that was
// paused, partitioned or slow to see the watch cannot tell a revocation
// it missed from one that never happened.
//
// While Watch runs, a prober proves freshness every ProbeInterval: at time
// t it reads the cluster's current revision R (a linearizable read, so R
// covers every write committed before t), waits until the revocation
// watch has handed every event up to R to the Watch loop (asking etcd for
// a progress notification when no revocation moved it there), then sends
// a mark for t through the same channel as the changes. The Watch loop
// meets the mark after it has applied every change before it, and sets
// FreshAt to t: every revocation committed before t has been applied.

import (
	"context"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultProbeInterval is how often Watch proves it is up to date.
const DefaultProbeInterval = 250 * time.Millisecond

// freshness is the revocation watch's progress and the mark.
type freshness struct {
	// delivered is the revision up to which the revocation watch has
	// sent every event to the Watch loop.
	delivered atomic.Int64
	// at is FreshAt, in Unix nanoseconds.
	at atomic.Int64
}

// deliveredUpTo raises delivered to rev.
func (f *freshness) deliveredUpTo(rev int64) {
	for {
		old := f.delivered.Load()
		if rev <= old || f.delivered.CompareAndSwap(old, rev) {
			return
		}
	}
}

// mark is applied by the Watch loop.
func (f *freshness) mark(t time.Time) {
	if n := t.UnixNano(); n > f.at.Load() {
		f.at.Store(n)
	}
}

// FreshAt returns a time before which every revocation committed to the
// cluster has been applied by this replica's Watch callback; zero before
// the first proof (or when no Watch runs).
func (s *Store) FreshAt() time.Time {
	n := s.fresh.at.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// probe proves freshness every interval until ctx is done, sending each
// proof's time through out after the events it covers.
func (s *Store) probe(ctx context.Context, interval time.Duration, out chan<- change) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		rctx, cancel := context.WithTimeout(ctx, interval)
		resp, err := s.cli.Get(rctx, s.k.schema(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			continue
		}
		if !s.awaitDelivered(ctx, resp.Header.Revision, interval) {
			continue
		}
		select {
		case out <- change{freshAt: at}:
		case <-ctx.Done():
			return
		}
	}
}

// awaitDelivered waits, at most for d, until the revocation watch has
// delivered every event up to rev. A watch with no revocation to report
// learns how far it is through a progress notification, which the
// member sends once every watch on the stream has caught up.
func (s *Store) awaitDelivered(ctx context.Context, rev int64, d time.Duration) bool {
	if s.fresh.delivered.Load() >= rev {
		return true
	}
	// The same outgoing metadata as the watches (WithRequireLeader)
	// selects their gRPC stream.
	pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), d)
	defer cancel()
	if err := s.cli.RequestProgress(pctx); err != nil {
		return false
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.fresh.delivered.Load() < rev {
		select {
		case <-pctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}
