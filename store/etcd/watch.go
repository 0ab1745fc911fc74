package etcd

// store.Watcher on etcd watches: four narrow watches (revocations, the
// log's state, the saved tree head, the trust anchors) rather than one on
// the whole prefix, so a replica is not sent every certificate and tree
// node the others write.

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Watch implements store.Watcher. fn runs on one goroutine, in the order
// etcd reports the changes.
func (s *Store) Watch(ctx context.Context, fn func(store.Change)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := make(chan change, 256)
	type target struct {
		key    string
		prefix bool
		kind   store.ChangeKind
	}
	targets := []target{
		{s.k.revoked(), true, store.ChangeRevoked},
		{s.k.logState(), false, store.ChangeLog},
		{s.k.logSTH(), false, store.ChangeTreeHead},
		{s.k.anchors(), false, store.ChangeAnchors},
	}
	// The revision every watch starts after, so nothing committed after
	// Watch was called is missed.
	var start int64
	for start == 0 {
		rctx, rcancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, s.k.schema())
		rcancel()
		if err == nil {
			start = resp.Header.Revision
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	s.fresh.deliveredUpTo(start)
	for _, t := range targets {
		go s.watchOne(ctx, t.key, t.prefix, t.kind, start, changes)
	}
	go s.probe(ctx, s.probeInterval, changes)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-changes:
			if !c.freshAt.IsZero() {
				s.fresh.mark(c.freshAt)
				continue
			}
			fn(c.Change)
		}
	}
}

// change is what the watches and the prober send the Watch loop: a
// change, or (freshAt set) a proof of freshness (fresh.go).
type change struct {
	store.Change
	freshAt time.Time
}

// watchOne watches key (a prefix when prefix is set) from after revision
// start, sending a Change of kind for each put, until ctx is done. It
// resumes where it stopped when the watch breaks (no change is lost), and
// sends ChangeResync when etcd has compacted the history it would need.
func (s *Store) watchOne(ctx context.Context, key string, prefix bool, kind store.ChangeKind, start int64, out chan<- change) {
	send := func(c store.Change) bool {
		select {
		case out <- change{Change: c}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := start + 1
	for ctx.Err() == nil {
		opts := []clientv3.OpOption{clientv3.WithRev(next)}
		if prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		wctx, wcancel := context.WithCancel(s.fresh.streamCtx(ctx))
		id := s.fresh.addStream(wcancel)
		for resp := range s.cli.Watch(wctx, key, opts...) {
			if resp.CompactRevision > 0 {
				// History we needed is gone: resume from what is
				// left and tell the caller to reload.
				next = resp.CompactRevision
				if !send(store.Change{Kind: store.ChangeResync}) {
					break
				}
				continue
			}
			if err := resp.Err(); err != nil {
				break
			}
			// Only events, and progress notifications (sent once the
			// watcher has caught up), move next: a response's header
			// revision is the store's current one, which a watcher
			// still sending a backlog (etcd sends it in parts, each
			// with the current revision, and the creation response
			// has it too) has not reached.
			if len(resp.Events) > 0 {
				next = resp.Events[len(resp.Events)-1].Kv.ModRevision + 1
			} else if resp.IsProgressNotify() && resp.Header.Revision >= next {
				next = resp.Header.Revision + 1
			}
			sent := true
			for _, ev := range resp.Events {
				if ev.Type != mvccpb.PUT {
					continue
				}
				c := store.Change{Kind: kind}
				switch kind {
				case store.ChangeRevoked:
					if c.Revoked = s.decodeRevocation(ev.Kv); c.Revoked == nil {
						continue
					}
				case store.ChangeTreeHead:
					c.TreeHead, _ = decodeSTH(ev.Kv)
				}
				if !send(c) {
					sent = false
					break
				}
			}
			if !sent {
				break
			}
			if kind == store.ChangeRevoked {
				// Every event before next is now in the Watch
				// loop's channel.
				s.fresh.deliveredUpTo(next - 1)
			}
		}
		s.fresh.dropStream(id)
		wcancel()
		// The watch ended (the member lost its leader, the connection
		// broke): start again from the first revision not seen, so
		// the changes made meanwhile are replayed, unless etcd has
		// compacted them (then the watch reports ChangeResync).
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// decodeRevocation turns a revocation entry into the fields of a revoked
// certificate record; nil for an entry it cannot read.
func (s *Store) decodeRevocation(kv *mvccpb.KeyValue) *store.Certificate {
	rest := strings.TrimPrefix(string(kv.Key), s.k.revoked())
	ski, _, ok := strings.Cut(rest, "/")
	if !ok {
		return nil
	}
	var r store.Revocation
	if err := json.Unmarshal(kv.Value, &r); err != nil || r.Serial == "" {
		return nil
	}
	return &store.Certificate{Serial: r.Serial, IssuerSKI: ski, NotAfter: r.NotAfter, RevokedAt: r.RevokedAt, RevocationReason: r.Reason}
}
