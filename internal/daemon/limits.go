package daemon

// Connection bounds: each listener holds at most a configured number of
// open connections, so that idle keep-alive connections (or half-open
// ones) cannot use up the process's file descriptors and stop every
// listener and the admin socket. At the bound, a new connection takes the
// place of the connection idle the longest (or, with none idle, the
// oldest that has not sent a request yet); only when every connection is
// busy with a request is the new one closed. Near the bound, idle
// connections are closed after idleNearBound instead of idleTimeout.
// Reaching a bound is a WARN line (at most one per listener every
// warnEvery) and a metric sample.

import (
	"container/list"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// fdReserve is kept apart from the TCP listeners' bounds: the store,
	// log files, etcd and KMS connections, the admin socket's own.
	fdReserve = 256
	// minConnections is the smallest derived bound.
	minConnections = 64
	// idleNearBound replaces idleTimeout once a listener holds three
	// quarters of its bound.
	idleNearBound = 5 * time.Second
	warnEvery     = 10 * time.Second
)

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit and
// returns the soft limit in force.
func raiseFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		want := rl
		want.Cur = rl.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			rl = want
		}
	}
	return rl.Cur
}

// connectionBounds returns the bounds of the HTTPS, HTTP and admin
// listeners: the configured ones, or shares of the file limit nofile
// after fdReserve and the admin socket's bound (three quarters to HTTPS,
// one quarter to HTTP).
func connectionBounds(l config.Limits, nofile uint64) (https, http, admin int) {
	admin = l.AdminConnections
	if admin == 0 {
		admin = config.DefaultAdminConnections
	}
	avail := int(min(nofile, 1<<30)) - fdReserve - admin
	https, http = l.HTTPSConnections, l.HTTPConnections
	if https == 0 {
		https = max(avail*3/4, minConnections)
	}
	if http == 0 {
		http = max(avail/4, minConnections)
	}
	return https, http, admin
}

// listenerMetrics are the per-listener samples.
type listenerMetrics struct {
	open    *prometheus.GaugeVec
	limit   *prometheus.GaugeVec
	reached *prometheus.CounterVec
}

func newListenerMetrics(reg prometheus.Registerer) *listenerMetrics {
	m := &listenerMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentca_listener_connections",
			Help: "Open connections of each listener (https, http, admin)."}, []string{"listener"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentca_listener_connection_limit",
			Help: "The bound on each listener's open connections."}, []string{"listener"}),
		reached: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentca_listener_limit_reached_total",
			Help: "Connections accepted at a listener's bound (each one closed an idle connection, or was itself closed)."}, []string{"listener"}),
	}
	reg.MustRegister(m.open, m.limit, m.reached)
	return m
}

// boundedListener is a net.Listener holding at most max connections.
type boundedListener struct {
	net.Listener
	name    string
	max     int
	log     *slog.Logger
	metrics *listenerMetrics

	mu       sync.Mutex
	open     int
	idle     *list.List // *boundedConn, longest idle first
	fresh    *list.List // *boundedConn that have not sent a request, oldest first
	lastWarn time.Time
	skipped  int // bound reached since the last WARN line
}

func newBoundedListener(ln net.Listener, name string, max int, log *slog.Logger, m *listenerMetrics) *boundedListener {
	m.limit.WithLabelValues(name).Set(float64(max))
	m.open.WithLabelValues(name).Set(0)
	m.reached.WithLabelValues(name).Add(0)
	return &boundedListener{Listener: ln, name: name, max: max, log: log, metrics: m, idle: list.New(), fresh: list.New()}
}

// boundedConn is one counted connection. Its fields are guarded by l.mu.
type boundedConn struct {
	net.Conn
	l      *boundedListener
	closed bool          // counted out
	elem   *list.Element // in l.idle or l.fresh, or nil
	where  *list.List
	since  time.Time // when it last became idle
}

func (c *boundedConn) Close() error {
	c.l.mu.Lock()
	c.release()
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// release counts c out, once; the caller holds l.mu.
func (c *boundedConn) release() {
	if c.closed {
		return
	}
	c.closed = true
	c.unlist()
	c.l.open--
	c.l.metrics.open.WithLabelValues(c.l.name).Set(float64(c.l.open))
}

// unlist takes c off its list; the caller holds l.mu.
func (c *boundedConn) unlist() {
	if c.elem != nil {
		c.where.Remove(c.elem)
		c.elem, c.where = nil, nil
	}
}

// Accept returns the next connection, making room for it at the bound.
func (l *boundedListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &boundedConn{Conn: nc, l: l}
		l.mu.Lock()
		var victim *boundedConn
		full := l.open >= l.max
		if full {
			victim = l.evictable()
		}
		if !full || victim != nil {
			l.open++
			c.where, c.elem = l.fresh, l.fresh.PushBack(c)
			l.metrics.open.WithLabelValues(l.name).Set(float64(l.open))
		}
		var warn *int
		if full {
			warn = l.noteReached()
		}
		l.mu.Unlock()
		if full {
			l.metrics.reached.WithLabelValues(l.name).Inc()
		}
		if victim != nil {
			// Counted out already (evictable).
			_ = victim.Conn.Close()
		}
		if warn != nil {
			l.log.Warn("listener connection limit reached; closing the connection idle the longest, or the new one if every connection is busy",
				"listener", l.name, "limit", l.max, "times", *warn, "setting", "limits."+l.name+"_connections")
		}
		if full && victim == nil {
			nc.Close()
			continue
		}
		return c, nil
	}
}

// evictable picks the connection to close at the bound: the one idle the
// longest, else the oldest that has sent no request; nil when every
// connection is busy. The caller holds l.mu and closes the victim's
// socket; it is counted out here.
func (l *boundedListener) evictable() *boundedConn {
	for _, ls := range []*list.List{l.idle, l.fresh} {
		if e := ls.Front(); e != nil {
			v := e.Value.(*boundedConn)
			v.release()
			return v
		}
	}
	return nil
}

// noteReached counts a time the bound was reached and returns the count
// to log when a WARN line is due. The caller holds l.mu.
func (l *boundedListener) noteReached() *int {
	l.skipped++
	if time.Since(l.lastWarn) < warnEvery {
		return nil
	}
	n := l.skipped
	l.lastWarn, l.skipped = time.Now(), 0
	return &n
}

// connState is the http.Server's ConnState hook: it keeps the idle and
// fresh lists, and near the bound closes connections idle for longer
// than idleNearBound.
func (l *boundedListener) connState(nc net.Conn, st http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*boundedConn)
	if !ok {
		return
	}
	var stale []*boundedConn
	l.mu.Lock()
	if c.closed {
		l.mu.Unlock()
		return
	}
	switch st {
	case http.StateActive, http.StateHijacked, http.StateClosed:
		c.unlist()
	case http.StateIdle:
		c.unlist()
		c.since = time.Now()
		c.where, c.elem = l.idle, l.idle.PushBack(c)
	}
	if l.open*4 >= l.max*3 {
		for e := l.idle.Front(); e != nil; e = l.idle.Front() {
			v := e.Value.(*boundedConn)
			if time.Since(v.since) < idleNearBound {
				break
			}
			v.release()
			stale = append(stale, v)
		}
	}
	l.mu.Unlock()
	for _, v := range stale {
		_ = v.Conn.Close()
	}
}

// maxClientRSABits is the largest RSA client-certificate key the HTTPS
// listener lets into a handshake: the client's CertificateVerify
// signature is checked with it before any request is read, and the CA
// never issues larger keys (ca.CheckPublicKey).
const maxClientRSABits = 4096

// capClientKey is the HTTPS listener's VerifyPeerCertificate hook: it
// refuses, before the client's handshake signature is verified, a leaf
// with an RSA key over maxClientRSABits. Nothing else is checked here
// (the API authenticates the certificate against its records).
func capClientKey(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	if len(rawCerts) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return err
	}
	if k, ok := leaf.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() > maxClientRSABits {
		return fmt.Errorf("client certificate key RSA-%d is larger than %d bits", k.N.BitLen(), maxClientRSABits)
	}
	return nil
}
