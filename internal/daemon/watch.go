package daemon

// Replicas: a store shared with other agentca processes (store/etcd)
// reports what they changed, and this turns each change into the cache
// update the local API would have made had the change been made here.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentca/agentca/store"
	ct "github.com/google/certificate-transparency-go"
)

// storeHooks are the cache updates a store change calls for. Nil hooks
// are skipped.
type storeHooks struct {
	// Revoked brings a revocation, this replica's or another's, to the
	// caches (revocation.Feed.Deliver): drop and re-sign the OCSP
	// response, rebuild the CRL. It is the only path by which a
	// revocation reaches them on a store that reports its changes.
	Revoked func(ctx context.Context, rec *store.Certificate)
	// LogChanged gets the tree head a replica (this one or another)
	// saved, nil when the store could not decode it or changes may have
	// been missed: the issuance log then serves it once checked
	// (logsign.Signer.Offer), or looks at the stored log.
	LogChanged func(*ct.SignedTreeHead)
	// AnchorsChanged reloads the trust anchors.
	AnchorsChanged func(ctx context.Context)
	// Resync runs when changes may have been missed (the watch fell
	// behind etcd's compaction): everything cached from the store should
	// be refreshed. The store is reachable when it runs.
	Resync func(ctx context.Context)
}

// startStoreWatch follows st's changes, if st reports them
// (store.Watcher), until ctx is done or the returned stop is called; stop
// waits for the watch to end.
func startStoreWatch(ctx context.Context, st store.Store, h storeHooks, log *slog.Logger) (stop func()) {
	w, ok := st.(store.Watcher)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Watch(ctx, func(c store.Change) { h.apply(ctx, c, log) })
	}()
	return func() {
		cancel()
		<-done
	}
}

// apply makes the cache update for one change.
func (h storeHooks) apply(ctx context.Context, c store.Change, log *slog.Logger) {
	switch c.Kind {
	case store.ChangeRevoked:
		if h.Revoked != nil && c.Revoked != nil {
			h.Revoked(ctx, c.Revoked)
		}
	case store.ChangeTreeHead:
		// A replica saved a tree head: serve it (or one at least as
		// large). The log's growth alone (ChangeLog) is not a cue: the
		// replica that appended signs its batch's tree head in the
		// batch's transaction (etcd.Options.TreeHeads), and signing here
		// too would only double the tree-head rounds.
		if h.LogChanged != nil {
			h.LogChanged(c.TreeHead)
		}
	case store.ChangeAnchors:
		if h.AnchorsChanged != nil {
			h.AnchorsChanged(ctx)
		}
	case store.ChangeResync:
		log.Warn("the store's change stream was interrupted; refreshing what is cached from it")
		if h.LogChanged != nil {
			h.LogChanged(nil)
		}
		if h.AnchorsChanged != nil {
			h.AnchorsChanged(ctx)
		}
		if h.Resync != nil {
			h.Resync(ctx)
		}
	}
}

// freshnessProver is a store that proves how recently this process has
// applied every revocation other processes committed (store/etcd).
type freshnessProver interface {
	FreshAt() time.Time
}

// freshWithin is the OCSP responder's Fresh for st: true while st's last
// proof is at most maxAge old; nil (always fresh) for a store no other
// process writes.
func freshWithin(st store.Store, maxAge time.Duration) func() bool {
	p, ok := st.(freshnessProver)
	if !ok {
		return nil
	}
	return func() bool { return time.Since(p.FreshAt()) <= maxAge }
}

// readyWithin is the API's Ready for st: an error while st's last proof of
// freshness is older than maxAge (the replica cannot reach a quorum, or
// its watch is stuck); nil for a store no other process writes.
func readyWithin(st store.Store, maxAge time.Duration) func() error {
	p, ok := st.(freshnessProver)
	if !ok {
		return nil
	}
	return func() error {
		at := p.FreshAt()
		if at.IsZero() {
			return fmt.Errorf("this replica has not yet read etcd's current state")
		}
		if age := time.Since(at); age > maxAge {
			return fmt.Errorf("this replica has not been able to read etcd's current state for %s", age.Round(time.Millisecond))
		}
		return nil
	}
}
