package daemon

// Choosing the store backend from agentca.json's storage section.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
	"github.com/prometheus/client_golang/prometheus"
)

// OpenStore opens the store agentca.json's storage section in dir
// names, for tools that read it beside a running daemon's (agentca log
// audit on etcd). A bbolt file is opened read-only. A store that is
// missing, empty or not the one dir is bound to is refused.
func OpenStore(ctx context.Context, dir string, sc config.Storage) (store.Store, error) {
	return openBound(ctx, dir, sc, nil, nil, nil, sc.Type == "bbolt" || sc.Type == "", nil)
}

// openStore opens, or creates, the configured store: the bbolt file
// (relative paths in dir) or the etcd cluster, for init and migrate
// (serve and the tools use openBound). onLogAppend is called after each local commit
// that appended to the issuance log (the tree head signer's cue).
func openStore(ctx context.Context, dir string, sc config.Storage, onLogAppend func(), onCommit func(time.Duration, int)) (store.Store, error) {
	switch sc.Type {
	case "bbolt", "":
		path := sc.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		return bolt.Open(path, bolt.Options{OnLogAppend: onLogAppend, OnCommit: onCommit})
	case "etcd":
		opts, err := etcdOptions(dir, sc)
		if err != nil {
			return nil, err
		}
		opts.OnLogAppend = onLogAppend
		opts.OnCommit = onCommit
		return etcd.Open(ctx, opts)
	}
	return nil, fmt.Errorf("storage: unsupported type %q", sc.Type)
}

// etcdOptions turns the storage section into etcd.Options, reading the
// TLS files and the password file (relative paths in dir).
func etcdOptions(dir string, sc config.Storage) (etcd.Options, error) {
	opts := etcd.Options{Endpoints: sc.Endpoints, Prefix: sc.Prefix, RequestTimeout: sc.RequestTimeout.Std(),
		AttemptTimeout: sc.AttemptTimeout.Std(), MaxTxnOps: sc.MaxTxnOps}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	useTLS := sc.CAFile != "" || sc.CertFile != ""
	for _, e := range sc.Endpoints {
		useTLS = useTLS || strings.HasPrefix(e, "https://")
	}
	if useTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if sc.CAFile != "" {
			pemBytes, err := os.ReadFile(abs(sc.CAFile))
			if err != nil {
				return opts, fmt.Errorf("storage.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemBytes) {
				return opts, fmt.Errorf("storage.ca_file %s: no PEM certificate in it", sc.CAFile)
			}
			tc.RootCAs = pool
		}
		if sc.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(abs(sc.CertFile), abs(sc.KeyFile))
			if err != nil {
				return opts, fmt.Errorf("storage.cert_file/key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts.TLS = tc
	}
	if sc.Username != "" {
		b, err := os.ReadFile(abs(sc.PasswordFile))
		if err != nil {
			return opts, fmt.Errorf("storage.password_file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return opts, errors.New("storage.password_file: the file is empty")
		}
		opts.Username, opts.Password = sc.Username, pw
	}
	return opts, nil
}

// checkEmptyStore refuses, at init, a shared store that already holds a
// CA (trust anchors or an issuance log): a second replica copies the
// first one's state directory instead of running init.
func checkEmptyStore(ctx context.Context, st store.Store, sc config.Storage) error {
	if sc.Type != "etcd" {
		return nil
	}
	set, err := st.Anchors(ctx)
	if err != nil {
		return err
	}
	ls, err := st.LogState(ctx)
	if err != nil {
		return err
	}
	if set.Sequence != 0 || ls.Size() != 0 {
		return fmt.Errorf("etcd prefix %s already holds a CA (%d trust anchor changes, %d log entries): choose another --etcd-prefix, or copy the running CA's state directory to add a replica: %w",
			sc.Prefix, set.Sequence, ls.Size(), ErrExists)
	}
	return nil
}

// registerStoreMetrics exports the etcd store's committer counts: write
// transactions committed, lost to another replica (or to a stale read),
// and preceded by a read. Nothing for bbolt.
func registerStoreMetrics(reg prometheus.Registerer, st store.Store) {
	es, ok := st.(*etcd.Store)
	if !ok {
		return
	}
	counter := func(name, help string, v func(etcd.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(es.Stats())) })
	}
	reg.MustRegister(
		counter("agentca_etcd_commits_total", "Write transactions the etcd store committed.", func(s etcd.Stats) int64 { return s.Commits }),
		counter("agentca_etcd_conflicts_total", "Write transactions that lost a compare (another replica wrote a key first, or a value used was stale) and were tried again.", func(s etcd.Stats) int64 { return s.Conflicts }),
		counter("agentca_etcd_reads_total", "Write attempts that read their keys first (the others were sent on what the replica knew).", func(s etcd.Stats) int64 { return s.Reads }),
	)
}
