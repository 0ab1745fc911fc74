package daemon

// agentca migrate: a CA kept in a bbolt file moved into etcd, so that
// several replicas can serve it (docs/ha.md).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/logaudit"
	"github.com/agentca/agentca/translog"
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
	st, err := openStore(ctx, opts.Dir, to, nil, nil)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	dst := st.(*etcd.Store)
	stats, err := dst.Import(ctx, exp)
	if err != nil {
		return nil, err
	}
	// Until FinishImport the prefix is marked: no replica opens it. A
	// failure below leaves it so, and says so.
	failed := func(format string, args ...any) error {
		return fmt.Errorf("migrate: %s; agentca.json is unchanged, and the etcd prefix %s holds an unfinished copy that no replica opens: delete it (etcdctl del --prefix %s/) before migrating again",
			fmt.Sprintf(format, args...), dst.Prefix(), dst.Prefix())
	}
	dstState, err := auditCopy(ctx, dst, srcState, logaudit.Options{LogKey: logKey,
		SweptBefore: time.Now().Add(-cfg.Storage.RetentionOrDefault())})
	if err != nil {
		return nil, failed("%v", err)
	}

	// The copy carries the state directory's store identity (a new one
	// for a directory from before the binding, written once the copy is
	// served).
	storeID, err := readStoreID(opts.Dir)
	if err != nil {
		return nil, failed("%v", err)
	}
	newID := storeID == ""
	if newID {
		if storeID, err = newStoreID(); err != nil {
			return nil, failed("%v", err)
		}
	}
	if err := dst.SetStoreID(ctx, storeID); err != nil {
		return nil, failed("%v", err)
	}

	backup, undo, err := switchStorage(cfgPath, to)
	if err != nil {
		return nil, failed("%v", err)
	}
	if err := dst.FinishImport(ctx); err != nil {
		// Back to bbolt: the copy is not served.
		if rerr := undo(); rerr != nil {
			return nil, fmt.Errorf("migrate: %v; restoring agentca.json also failed (%v): copy %s back over it", err, rerr, backup)
		}
		return nil, failed("%v", err)
	}
	if newID {
		if err := bindNewStore(ctx, dst, opts.Dir, storeID); err != nil {
			return nil, fmt.Errorf("migrate: the CA is in etcd now, but writing %s failed: %w", filepath.Join(opts.Dir, StoreIDFile), err)
		}
	}
	path := cfg.Storage.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(opts.Dir, path)
	}
	return &MigrateResult{Stats: stats, LogSize: dstState.Size(), Root: dstState.Root(), From: path, ConfigPath: cfgPath, Backup: backup}, nil
}

// auditCopy checks that dst's log, copied, is the source's (srcState)
// and audits it against the copied records; it returns dst's log state.
func auditCopy(ctx context.Context, dst *etcd.Store, srcState translog.State, opts logaudit.Options) (translog.State, error) {
	dstState, err := dst.LogState(ctx)
	if err != nil {
		return dstState, err
	}
	if dstState.Size() != srcState.Size() || string(dstState.Root()) != string(srcState.Root()) {
		return dstState, fmt.Errorf("the copied log (size %d, root %x) is not the bbolt file's (size %d, root %x)",
			dstState.Size(), dstState.Root(), srcState.Size(), srcState.Root())
	}
	rep, err := logaudit.RunWithOptions(ctx, dst, dst, opts)
	if err != nil {
		return dstState, fmt.Errorf("audit of the copy: %v", err)
	}
	if len(rep.Findings) > 0 {
		return dstState, fmt.Errorf("the audit of the copy found %d divergence(s), first: %s", len(rep.Findings), rep.Findings[0])
	}
	return dstState, nil
}

// switchStorage points agentca.json (cfgPath) at to: only the storage
// section changes; the file keeps its mode and owner. The previous one is
// kept beside it, as backup; undo writes it back over cfgPath.
func switchStorage(cfgPath string, to config.Storage) (backup string, undo func() error, err error) {
	info, err := os.Stat(cfgPath)
	if err != nil {
		return "", nil, err
	}
	old, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", nil, err
	}
	updated, err := withStorage(old, to)
	if err != nil {
		return "", nil, err
	}
	backup = cfgPath + ".bbolt"
	if _, err := os.Lstat(backup); err == nil {
		backup = fmt.Sprintf("%s.bbolt-%s", cfgPath, time.Now().UTC().Format("20060102T150405Z"))
	}
	if err := writeLike(backup, old, info); err != nil {
		return "", nil, err
	}
	if err := writeLike(cfgPath, updated, info); err != nil {
		return "", nil, err
	}
	return backup, func() error { return writeLike(cfgPath, old, info) }, nil
}

// withStorage returns the agentca.json document raw with its storage
// section replaced by st, every other field as it was (checked: the result
// parses and validates).
func withStorage(raw []byte, st config.Storage) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	v, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	doc["storage"] = v
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	out = append(out, '\n')
	if _, err := config.Parse(out); err != nil {
		return nil, err
	}
	return out, nil
}

// writeLike atomically writes data to path with the mode and owner of
// info (the file it replaces).
func writeLike(path string, data []byte, info os.FileInfo) error {
	if err := fsutil.WriteFile(path, data, info.Mode().Perm()); err != nil {
		return err
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		return os.Chown(path, int(st.Uid), int(st.Gid))
	}
	return nil
}
