package api

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultClientCertsSize bounds the records a ClientCerts holds.
const DefaultClientCertsSize = 64 << 10

// ClientCerts caches the unrevoked certificate records the client
// certificate check (clientCertificate) read from the store, by serial,
// so a client that presents its certificate on every request costs one
// store read and one JSON decode per certificate, not per request. A
// record never changes but for its revocation (and its deletion after
// expiry, which the check refuses from NotAfter on), so the cache holds
// a record until it is revoked:
//
//   - every revocation reaches Revoked through the revocation service's
//     one Notifier (Direct on a store one process owns, the store's
//     watch through a Feed on etcd), which drops the serial, and Forget
//     drops everything when the watch may have missed revocations;
//   - a record read from the store concurrently with a revocation is not
//     kept: every drop moves a generation, and a record read before the
//     drop (its lookup saw an older generation) is not added after it;
//   - on a store replicas share, another replica's revocation arrives
//     only through the watch, so the cache is used only while fresh says
//     the watch is up to date (the rule of the OCSP responder's cached
//     "good" answers, ocsp.max_staleness); else the store is read.
//
// Eviction is by halves: records go into the current map; when it is
// full, it becomes the previous one (the older previous is dropped) and
// a record found there moves back to the current one.
type ClientCerts struct {
	fresh func() bool
	half  int

	// hits, misses and stale count the lookups: answered from the
	// cache, read from the store (and kept unless revoked meanwhile),
	// read from the store because fresh said no.
	hits, misses, stale atomic.Uint64

	mu        sync.Mutex
	gen       uint64
	cur, prev map[string]*store.Certificate
}

// NewClientCerts returns a cache of at most size records (zero means
// DefaultClientCertsSize). fresh, when not nil, says whether every
// revocation committed by other processes up to a recent moment has
// reached Revoked; while it says no, the cache is not used.
func NewClientCerts(size int, fresh func() bool) *ClientCerts {
	if size <= 0 {
		size = DefaultClientCertsSize
	}
	return &ClientCerts{fresh: fresh, half: max(size/2, 1), cur: map[string]*store.Certificate{}}
}

// Revoked drops rec's serial: a revocation. It is a revocation.Cache.
func (c *ClientCerts) Revoked(_ context.Context, rec *store.Certificate) {
	sn, err := store.NormalizeSerial(rec.Serial)
	if err != nil {
		sn = rec.Serial
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.cur, sn)
	delete(c.prev, sn)
}

// Forget drops every record: revocations may have been missed (the
// store's watch fell behind and resynced).
func (c *ClientCerts) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.cur, c.prev = map[string]*store.Certificate{}, nil
}

// Len is the number of records held.
func (c *ClientCerts) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}

// lookup returns the record of serial sn (a copy: its slices and map are
// shared and read only), or nil and the generation to pass to add after
// reading the store. usable is false while the cache may not be used.
func (c *ClientCerts) lookup(sn string) (rec *store.Certificate, gen uint64, usable bool) {
	if c == nil {
		return nil, 0, false
	}
	if c.fresh != nil && !c.fresh() {
		c.stale.Add(1)
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.cur[sn]
	if r == nil {
		if r = c.prev[sn]; r != nil {
			c.put(sn, r)
		}
	}
	if r == nil {
		c.misses.Add(1)
		return nil, c.gen, true
	}
	c.hits.Add(1)
	cp := *r
	return &cp, 0, true
}

// register exports the lookups and the records held to reg.
func (c *ClientCerts) register(reg prometheus.Registerer) {
	lookups := func(result string, n *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "agentca_client_cert_cache_lookups_total",
			Help:        "Client certificate checks by where the record came from: hit (the cache), miss (the store), stale (the store: the watch not proven fresh).",
			ConstLabels: prometheus.Labels{"result": result}}, func() float64 { return float64(n.Load()) })
	}
	reg.MustRegister(lookups("hit", &c.hits), lookups("miss", &c.misses), lookups("stale", &c.stale),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentca_client_cert_cache_records",
			Help: "Certificate records the client certificate cache holds."}, func() float64 { return float64(c.Len()) }))
}

// add keeps rec, read from the store after lookup returned gen, unless
// it is revoked or a revocation (or Forget) came since gen.
func (c *ClientCerts) add(sn string, rec *store.Certificate, gen uint64) {
	if rec.Revoked() {
		return
	}
	cp := *rec
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.put(sn, &cp)
}

// put stores r under sn, turning the current map over when full; c.mu
// is held.
func (c *ClientCerts) put(sn string, r *store.Certificate) {
	if len(c.cur) >= c.half {
		c.prev, c.cur = c.cur, make(map[string]*store.Certificate, c.half)
	}
	c.cur[sn] = r
	delete(c.prev, sn)
}

// certRecord reads the record of serial sn for the client certificate
// check: from the cache when it may be used and holds it, else from the
// store (and keeps it).
func (s *Server) certRecord(ctx context.Context, sn string) (*store.Certificate, error) {
	return s.clientCerts.record(ctx, sn, s.store.Certificate)
}

// record is the record of serial sn from c, or read (and kept unless a
// revocation came meanwhile); a nil c always reads.
func (c *ClientCerts) record(ctx context.Context, sn string, read func(context.Context, string) (*store.Certificate, error)) (*store.Certificate, error) {
	rec, gen, usable := c.lookup(sn)
	if rec != nil {
		return rec, nil
	}
	rec, err := read(ctx, sn)
	if err != nil || !usable {
		return rec, err
	}
	c.add(sn, rec, gen)
	return rec, nil
}

var _ revocation.Cache = (*ClientCerts)(nil)
