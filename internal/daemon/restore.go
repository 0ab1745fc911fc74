package daemon

// agentca store restore: a backup made by agentca backup put back as the
// CA's store, the daemon (every replica) stopped. It never overwrites a
// store: a bbolt file is kept beside the restored one, an etcd prefix must
// be empty. The next serve still applies the rollback check (D/sth.json).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
)

// RestoreResult is what RestoreStore did.
type RestoreResult struct {
	Store string
	Keys  int // etcd: keys written
	// Kept is where the bbolt file that was replaced was moved ("" when
	// there was none).
	Kept string
}

// CheckBackup checks a copy agentca backup received (kind is the
// daemon's BackupKindHeader): it is complete, sound (bbolt: it opens and
// passes the page check) and carries the identity of the store dir is
// bound to.
func CheckBackup(ctx context.Context, path, kind, dir string) error {
	want, err := readStoreID(dir)
	if err != nil {
		return err
	}
	var got string
	switch kind {
	case BackupKindBbolt:
		b, err := bolt.Open(path, bolt.Options{ReadOnly: true, MustExist: true})
		if err != nil {
			return err
		}
		defer b.Close()
		if errs := b.Check(ctx); len(errs) > 0 {
			return fmt.Errorf("the copy fails bbolt's page check: %v", errs[0])
		}
		if got, err = b.StoreID(ctx); err != nil {
			return err
		}
	case BackupKindEtcd:
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := etcd.ReadBackup(f, func(k string, v []byte) error {
			if k == "/store_id" {
				got = string(v)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	default:
		return fmt.Errorf("the daemon sent a backup of an unknown kind %q", kind)
	}
	if want != "" && got != want {
		return fmt.Errorf("the copy has the store identity %q, not %s's %s", got, filepath.Join(dir, StoreIDFile), want)
	}
	return nil
}

// backupKind tells a bbolt file from an etcd backup by its first bytes.
func backupKind(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := bufio.NewReader(f).Peek(1)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if b[0] == '{' {
		return BackupKindEtcd, nil
	}
	return BackupKindBbolt, nil
}

// RestoreStore puts the backup at from back as the store D's agentca.json
// names, after checking it is this CA's and sound.
func RestoreStore(ctx context.Context, dir, from string) (*RestoreResult, error) {
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return nil, err
	}
	kind, err := backupKind(from)
	if err != nil {
		return nil, err
	}
	want := BackupKindBbolt
	if cfg.Storage.Type == "etcd" {
		want = BackupKindEtcd
	}
	if kind != want {
		return nil, fmt.Errorf("%s is a %s backup, but %s keeps the CA in %s", from, kind, filepath.Join(dir, config.FileName), want)
	}
	if err := CheckBackup(ctx, from, kind, dir); err != nil {
		return nil, err
	}
	res := &RestoreResult{Store: storeName(dir, cfg.Storage)}
	if kind == BackupKindEtcd {
		res.Keys, err = restoreEtcd(ctx, dir, cfg.Storage, from)
		return res, err
	}
	res.Kept, err = restoreBolt(boltPath(dir, cfg.Storage), from)
	return res, err
}

// restoreBolt copies from over path, keeping the file it replaces (which
// must not be held by a daemon) beside it.
func restoreBolt(path, from string) (string, error) {
	in, err := os.Open(from)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = io.Copy(tmp, in)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	kept := ""
	if _, err := os.Stat(path); err == nil {
		// Refused while a daemon holds it. (A damaged or empty file is
		// replaced, and kept.)
		b, err := bolt.Open(path, bolt.Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
		if err != nil && strings.Contains(err.Error(), "locked by another process") {
			return "", err
		}
		if err == nil {
			b.Close()
		}
		kept = fmt.Sprintf("%s.before-restore-%s", path, time.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(path, kept); err != nil {
			return "", err
		}
	}
	return kept, os.Rename(tmp.Name(), path)
}

// restoreEtcd writes the backup into the configured prefix, which must be
// empty.
func restoreEtcd(ctx context.Context, dir string, sc config.Storage, from string) (int, error) {
	opts, err := etcdOptions(dir, sc)
	if err != nil {
		return 0, err
	}
	cli, err := etcd.Dial(ctx, opts)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	f, err := os.Open(from)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	prefix := sc.Prefix
	if prefix == "" {
		prefix = config.DefaultEtcdPrefix
	}
	return etcd.Restore(ctx, cli, prefix, sc.MaxTxnOps, f)
}
