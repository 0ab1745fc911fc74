package revocation

import (
	"context"
	"sync"
	"time"

	"github.com/agentca/agentca/store"
)

// Cache follows revocations: the API's client certificate cache drops
// the record, the OCSP responder drops and re-signs the certificate's
// response, its issuer's CRL is rebuilt.
type Cache interface {
	Revoked(ctx context.Context, rec *store.Certificate)
}

// CacheFunc is a function as a Cache.
type CacheFunc func(ctx context.Context, rec *store.Certificate)

// Revoked calls f.
func (f CacheFunc) Revoked(ctx context.Context, rec *store.Certificate) { f(ctx, rec) }

// Notifier carries each revocation this process wrote to the caches,
// exactly once. Recorded returns when the caches have every record in
// recs (or a Feed gives up waiting, feedWait), so the answer to a
// revocation is sent after OCSP shows it.
type Notifier interface {
	Recorded(ctx context.Context, recs []store.Certificate)
}

// Direct is the Notifier of a store no other process writes (bbolt): it
// hands each record to the caches itself.
func Direct(c Cache) Notifier { return direct{c} }

type direct struct{ c Cache }

func (d direct) Recorded(ctx context.Context, recs []store.Certificate) {
	for i := range recs {
		d.c.Revoked(ctx, &recs[i])
	}
}

// feedWait bounds how long Recorded waits for the store's watch to bring
// a revocation this process wrote; past it the caches learn of it when
// the watch does (or at its resync).
const feedWait = 5 * time.Second

// feedKeep is how long a delivered revocation is remembered for a
// Recorded that comes after the watch.
const feedKeep = time.Minute

// Feed is the Notifier of a store shared by replicas (etcd): the store's
// watch brings every revocation, this process's and the others', to
// Deliver, which hands it to the caches; Recorded only waits for the
// watch to have brought the records this process wrote. So each
// revocation reaches the caches once, by one path.
type Feed struct {
	c Cache

	mu        sync.Mutex
	delivered map[string]time.Time       // serial → when the watch brought it
	waiting   map[string][]chan struct{} // serial → Recorded calls waiting for it
	pruned    time.Time
}

// NewFeed returns a Feed that delivers to c.
func NewFeed(c Cache) *Feed {
	return &Feed{c: c, delivered: map[string]time.Time{}, waiting: map[string][]chan struct{}{}}
}

// Deliver is the watch's hook for a revocation (store.ChangeRevoked).
func (f *Feed) Deliver(ctx context.Context, rec *store.Certificate) {
	f.c.Revoked(ctx, rec)
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.waiting[rec.Serial] {
		close(ch)
	}
	delete(f.waiting, rec.Serial)
	f.delivered[rec.Serial] = now
	if now.Sub(f.pruned) > feedKeep {
		for s, at := range f.delivered {
			if now.Sub(at) > feedKeep {
				delete(f.delivered, s)
			}
		}
		f.pruned = now
	}
}

// Resynced releases every waiting Recorded: the watch fell behind and the
// caches were rebuilt from the store, this process's revocations
// included.
func (f *Feed) Resynced() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, chs := range f.waiting {
		for _, ch := range chs {
			close(ch)
		}
		delete(f.waiting, s)
	}
}

// Recorded waits until the watch has delivered every record in recs.
func (f *Feed) Recorded(ctx context.Context, recs []store.Certificate) {
	var chs []chan struct{}
	f.mu.Lock()
	for i := range recs {
		s := recs[i].Serial
		if _, ok := f.delivered[s]; ok {
			delete(f.delivered, s)
			continue
		}
		ch := make(chan struct{})
		f.waiting[s] = append(f.waiting[s], ch)
		chs = append(chs, ch)
	}
	f.mu.Unlock()
	if len(chs) == 0 {
		return
	}
	timeout := time.NewTimer(feedWait)
	defer timeout.Stop()
	for _, ch := range chs {
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-timeout.C:
			return
		}
	}
}

var (
	_ Notifier = direct{}
	_ Notifier = (*Feed)(nil)
)
