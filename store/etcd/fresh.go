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
// a progress notification when no revocation moved it there, or, when
// none comes, reading whether any revocation newer than what the watch
// delivered exists at R), then sends
// a mark for t through the same channel as the changes. The Watch loop
// meets the mark after it has applied every change before it, and sets
// FreshAt to t: every revocation committed before t has been applied.

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
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
	// streams cancel the watches now open (restartStreams); stalls
	// counts the proofs in a row that failed while etcd answered.
	mu      sync.Mutex
	streams map[int]context.CancelFunc
	nextID  int
	stalls  int
	// gen names the current set of watch streams (streamCtx).
	gen atomic.Int64
}

// streamCtx is the context of the watches and their progress requests:
// etcd's client puts watches whose contexts carry the same outgoing
// metadata on one gRPC stream, and a stream stuck on a member that froze
// may outlive its watches for a while; a new generation gets a new one.
func (f *freshness) streamCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "agentca-watch", strconv.FormatInt(f.gen.Load(), 10))
}

func (f *freshness) addStream(cancel context.CancelFunc) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.streams == nil {
		f.streams = map[int]context.CancelFunc{}
	}
	f.nextID++
	f.streams[f.nextID] = cancel
	return f.nextID
}

func (f *freshness) dropStream(id int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.streams, id)
}

// restartStreams ends every watch stream; each watch starts again where
// it stopped, on a new gRPC stream, which the client opens on a member
// that answers.
func (f *freshness) restartStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen.Add(1)
	for _, cancel := range f.streams {
		cancel()
	}
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
	var lastRestart time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 4*interval)
		resp, err := retryRead(rctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) {
			return s.cli.Get(ctx, s.k.schema(), clientv3.WithCountOnly())
		})
		cancel()
		if err != nil {
			continue
		}
		rev := resp.Header.Revision
		if !s.awaitDelivered(ctx, rev, 2*interval) && !s.noneUndelivered(ctx, rev, 4*interval) {
			// etcd answers but the watch does not follow: its
			// stream may sit on a member that froze (the client
			// keeps a stream until keepalive gives up on it, many
			// seconds). Two proofs in a row: open new streams,
			// and give them time to start before doing it again.
			if s.fresh.stalls++; s.fresh.stalls >= 2 && time.Since(lastRestart) > 8*interval {
				s.fresh.stalls = 0
				lastRestart = time.Now()
				s.fresh.restartStreams()
			}
			continue
		}
		s.fresh.stalls = 0
		select {
		case out <- change{freshAt: at}:
		case <-ctx.Done():
			return
		}
	}
}

// noneUndelivered reports whether etcd, at revision rev, holds no
// revocation newer than what the revocation watch has delivered: then
// every revocation up to rev has been delivered although no progress
// notification said so (one is sent only while every watch on the stream
// has caught up, which under heavy load or after a member froze can take
// long). It reads the keys (not the values) of the revocations written
// since, a short list.
func (s *Store) noneUndelivered(ctx context.Context, rev int64, d time.Duration) bool {
	delivered := s.fresh.delivered.Load()
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := retryRead(rctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) {
		return s.cli.Get(ctx, s.k.revoked(), clientv3.WithPrefix(), clientv3.WithRev(rev),
			clientv3.WithMinModRev(delivered+1), clientv3.WithKeysOnly())
	})
	if err != nil || len(resp.Kvs) > 0 {
		return false
	}
	s.fresh.deliveredUpTo(rev)
	return true
}

// awaitDelivered waits, at most for d, until the revocation watch has
// delivered every event up to rev. A watch with no revocation to report
// learns how far it is through a progress notification, which the
// member sends once every watch on the stream has caught up.
func (s *Store) awaitDelivered(ctx context.Context, rev int64, d time.Duration) bool {
	if s.fresh.delivered.Load() >= rev {
		return true
	}
	// The same outgoing metadata as the watches selects their gRPC
	// stream.
	pctx, cancel := context.WithTimeout(s.fresh.streamCtx(ctx), d)
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
