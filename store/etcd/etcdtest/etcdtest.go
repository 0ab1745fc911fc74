// Package etcdtest starts real etcd servers inside the test process
// (go.etcd.io/etcd/server/v3/embed) on loopback ports picked free, with
// their data in a directory the caller owns: one member for the store's
// conformance suite, three for the replica, failover and quorum tests and
// for the benchmark's etcd mode.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Options tune a cluster. The zero value is usable.
type Options struct {
	// MaxTxnOps is the members' --max-txn-ops; zero means 1024 (etcd's
	// default is 128).
	MaxTxnOps uint
	// NoFsync turns off fsync in the members (benchmarks on a shared
	// machine); the default keeps it.
	NoFsync bool
	// StartTimeout bounds the wait for the cluster to elect a leader;
	// zero means 30 seconds.
	StartTimeout time.Duration
}

// Cluster is a running etcd cluster of in-process members.
type Cluster struct {
	members []*member
}

type member struct {
	name      string
	clientURL string
	mu        sync.Mutex
	etcd      *embed.Etcd // nil once stopped
}

// Start starts an n-member cluster with its data under dir and waits until
// every member is ready.
func Start(dir string, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("etcdtest: a cluster needs at least one member")
	}
	if opts.MaxTxnOps == 0 {
		opts.MaxTxnOps = 1024
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", name, ports[2*i+1]))
		c.members = append(c.members, &member{name: name, clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i])})
	}
	for i, m := range c.members {
		cfg := embed.NewConfig()
		cfg.Name = m.name
		cfg.Dir = filepath.Join(dir, m.name)
		cu, _ := url.Parse(m.clientURL)
		pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcdtest"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.MaxTxnOps = opts.MaxTxnOps
		cfg.UnsafeNoFsync = opts.NoFsync
		cfg.TickMs, cfg.ElectionMs = 50, 500
		cfg.LogLevel = "error"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("etcdtest: start %s: %w", m.name, err)
		}
		m.etcd = e
	}
	deadline := time.After(opts.StartTimeout)
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case err := <-m.etcd.Err():
			c.Close()
			return nil, fmt.Errorf("etcdtest: %s: %w", m.name, err)
		case <-deadline:
			c.Close()
			return nil, fmt.Errorf("etcdtest: the cluster was not ready within %s", opts.StartTimeout)
		}
	}
	return c, nil
}

// New starts an n-member cluster for t, with its data in t.TempDir(), and
// stops it when t ends.
func New(t testing.TB, n int) *Cluster {
	t.Helper()
	c, err := Start(t.TempDir(), n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// NewWith is New with opts.
func NewWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c, err := Start(t.TempDir(), n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Endpoints returns every member's client URL, stopped ones included (as a
// client configured before a failure would have them).
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL
	}
	return out
}

// Size is the number of members, stopped ones included.
func (c *Cluster) Size() int { return len(c.members) }

// Stop stops member i (a crash as far as the others can tell: its peers
// stop hearing from it). Stopping a stopped member does nothing.
func (c *Cluster) Stop(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// Close stops every member.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
