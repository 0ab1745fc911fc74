package daemon

// agentca migrate: a CA kept in a bbolt file moved into etcd, so that
// several replicas can serve it (docs/ha.md).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/logaudit"
)

// MigrateOptions configure Migrate.
type MigrateOptions struct {
	// Dir is the CA's state directory; its agentca.json names the bbolt
	// file.
	Dir string
	// Storage is the etcd storage section to move to (type etcd,
	// endpoints, prefix, TLS, credentials; relative paths in Dir). Its
	// retention, when unset, is the current one.
	Storage config.Storage
}

// MigrateResult is what Migrate moved.
type MigrateResult struct {
	Stats      etcd.ImportStats
	LogSize    uint64
	Root       []byte
	From       string // the bbolt file, left as it was
	ConfigPath string
	// Backup is the previous agentca.json, kept beside it.
	Backup string
}

// Migrate copies the CA's bbolt store into a new etcd prefix, audits the
// copy (the issuance log's entries, tree and signed tree head against the
// certificate records, as agentca log audit does) and only then points
// agentca.json at etcd, keeping the previous file as agentca.json.bbolt.
// The daemon must be stopped: the bbolt file is opened read-only, and
// refused while the daemon holds it. The bbolt file is left unchanged.
func Migrate(ctx context.Context, opts MigrateOptions) (*MigrateResult, error) {
	cfgPath := filepath.Join(opts.Dir, config.FileName)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	if cfg.Storage.Type == "etcd" {
		return nil, fmt.Errorf("%s already keeps the CA in etcd (prefix %s)", cfgPath, cfg.Storage.Prefix)
	}
	to := opts.Storage
	if to.Type != "etcd" {
		return nil, errors.New("migrate: the target storage must be etcd")
	}
	if to.Retention == 0 {
		to.Retention = cfg.Storage.Retention
	}
	next := *cfg
	next.Storage = to
	if err := next.Validate(); err != nil {
		return nil, err
	}
	logKey, err := ReadPublicKey(filepath.Join(opts.Dir, LogPubFile))
	if err != nil {
		return nil, err
	}

	src, err := OpenStore(ctx, opts.Dir, cfg.Storage)
	if err != nil {
		return nil, fmt.Errorf("open the bbolt store (stop agentca serve first): %w", err)
	}
	defer src.Close()
	exp, ok := src.(store.Exporter)
	if !ok {
		return nil, errors.New("migrate: the current store cannot be exported")
	}
	srcState, err := src.LogState(ctx)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, opts.Dir, to, nil)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	dst := st.(*etcd.Store)
	stats, err := dst.Import(ctx, exp)
	if err != nil {
		return nil, err
	}
	dstState, err := dst.LogState(ctx)
	if err != nil {
		return nil, err
	}
	if dstState.Size() != srcState.Size() || string(dstState.Root()) != string(srcState.Root()) {
		return nil, fmt.Errorf("migrate: the copied log (size %d, root %x) is not the bbolt file's (size %d, root %x); agentca.json is unchanged",
			dstState.Size(), dstState.Root(), srcState.Size(), srcState.Root())
	}
	rep, err := logaudit.RunWithOptions(ctx, dst, logaudit.Options{LogKey: logKey,
		SweptBefore: time.Now().Add(-cfg.Storage.RetentionOrDefault())})
	if err != nil {
		return nil, fmt.Errorf("migrate: audit of the copy: %w", err)
	}
	if len(rep.Findings) > 0 {
		return nil, fmt.Errorf("migrate: the audit of the copy found %d divergence(s), first: %s; agentca.json is unchanged", len(rep.Findings), rep.Findings[0])
	}

	old, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	backup := cfgPath + ".bbolt"
	if err := fsutil.WriteFile(backup, old, 0o600); err != nil {
		return nil, err
	}
	b, err := next.Marshal()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	path := cfg.Storage.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(opts.Dir, path)
	}
	return &MigrateResult{Stats: stats, LogSize: dstState.Size(), Root: dstState.Root(), From: path, ConfigPath: cfgPath, Backup: backup}, nil
}
