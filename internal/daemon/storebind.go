package daemon

// The state directory is bound to its store: agentca init writes a random
// store identity in both (D/store-id; the bbolt file's meta bucket or
// P/store_id in etcd), and every command that opens the store refuses one
// that is missing, empty or another CA's, so a deleted or replaced store
// is never silently served as a new, empty one (which would forget every
// revocation). A state directory from before the binding is bound at its
// next serve, when its store holds this CA's trust anchors.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/etcd"
)

// StoreIDFile holds the identity of the CA's store (hex, one line).
const StoreIDFile = "store-id"

// newStoreID makes a random store identity.
func newStoreID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// readStoreID reads D/store-id; "" when the file does not exist (a state
// directory from before the binding).
func readStoreID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, StoreIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("%s is empty: it should hold the identity of the CA's store", filepath.Join(dir, StoreIDFile))
	}
	return id, nil
}

// bindNewStore gives a store made by init or migrate the identity id and
// writes it to dir (when dir is set).
func bindNewStore(ctx context.Context, st store.Store, dir, id string) error {
	si, ok := st.(store.Identity)
	if !ok {
		return errors.New("the store cannot carry an identity")
	}
	if err := si.SetStoreID(ctx, id); err != nil {
		return err
	}
	if dir == "" {
		return nil
	}
	return fsutil.WriteFile(filepath.Join(dir, StoreIDFile), []byte(id+"\n"), 0o644)
}

// storeName names the configured store in messages.
func storeName(dir string, sc config.Storage) string {
	if sc.Type == "etcd" {
		p := sc.Prefix
		if p == "" {
			p = config.DefaultEtcdPrefix
		}
		return fmt.Sprintf("the etcd prefix %s (at %s)", p, strings.Join(sc.Endpoints, ","))
	}
	return "the bbolt file " + boltPath(dir, sc)
}

func boltPath(dir string, sc config.Storage) string {
	if filepath.IsAbs(sc.Path) {
		return sc.Path
	}
	return filepath.Join(dir, sc.Path)
}

// openBound opens the store agentca.json names, refusing one that is
// missing or empty (never creating it) or is not this state directory's
// (checkBinding). readOnly opens a bbolt file for reading. treeHeads, when
// set, signs each batch's tree head in its transaction on etcd.
func openBound(ctx context.Context, dir string, sc config.Storage, onLogAppend func(), onCommit func(time.Duration, int), treeHeads etcd.TreeHeadSigner, readOnly bool, log *slog.Logger) (store.Store, error) {
	var st store.Store
	switch sc.Type {
	case "bbolt", "":
		b, err := bolt.Open(boltPath(dir, sc), bolt.Options{OnLogAppend: onLogAppend, OnCommit: onCommit, ReadOnly: readOnly, MustExist: true})
		if err != nil {
			return nil, err
		}
		st = b
	case "etcd":
		opts, err := etcdOptions(dir, sc)
		if err != nil {
			return nil, err
		}
		opts.OnLogAppend, opts.OnCommit, opts.TreeHeads, opts.MustExist, opts.Logger = onLogAppend, onCommit, treeHeads, true, log
		e, err := etcd.Open(ctx, opts)
		if err != nil {
			return nil, err
		}
		st = e
	default:
		return nil, fmt.Errorf("storage: unsupported type %q", sc.Type)
	}
	if err := checkBinding(ctx, dir, sc, st, !readOnly, log); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// checkBinding refuses a store whose identity is not the one in
// D/store-id, or an empty store. A state directory without store-id (made
// before the binding) is bound now when bind is set and the store holds
// this CA's root among its trust anchors; without bind it is only checked.
func checkBinding(ctx context.Context, dir string, sc config.Storage, st store.Store, bind bool, log *slog.Logger) error {
	name := storeName(dir, sc)
	want, err := readStoreID(dir)
	if err != nil {
		return err
	}
	si, ok := st.(store.Identity)
	if !ok {
		return nil
	}
	got, err := si.StoreID(ctx)
	if err != nil {
		return err
	}
	if want != "" && got == want {
		return nil
	}
	if want != "" && got != "" {
		return fmt.Errorf("%s belongs to another CA (store identity %s; %s expects %s): point agentca.json's storage at this CA's store, or restore this CA's store from a backup (docs/operations.md)",
			name, got, filepath.Join(dir, StoreIDFile), want)
	}
	empty, err := isEmptyStore(ctx, st)
	if err != nil {
		return err
	}
	if empty {
		return fmt.Errorf("%s is empty (no trust anchors, no issuance log), not this CA's store %s: restore it from a backup (docs/operations.md); a new store is made only by agentca init",
			name, orUnknown(want))
	}
	if want != "" {
		return fmt.Errorf("%s has no store identity, but %s expects %s: it is not this CA's store; restore this CA's store from a backup (docs/operations.md)",
			name, filepath.Join(dir, StoreIDFile), want)
	}
	// A state directory from before the binding.
	if err := holdsRoot(ctx, dir, st, name); err != nil {
		return err
	}
	if !bind {
		return nil
	}
	id := got
	if id == "" {
		if id, err = newStoreID(); err != nil {
			return err
		}
	}
	if err := bindNewStore(ctx, st, dir, id); err != nil {
		return fmt.Errorf("binding the state directory to %s: %w", name, err)
	}
	if log != nil {
		log.Info("bound the state directory to its store", "store", name, "store_id", id, "file", filepath.Join(dir, StoreIDFile))
	}
	return nil
}

func orUnknown(id string) string {
	if id == "" {
		return "(unknown)"
	}
	return id
}

// isEmptyStore reports whether st holds no CA: no trust anchors and an
// empty issuance log.
func isEmptyStore(ctx context.Context, st store.Store) (bool, error) {
	set, err := st.Anchors(ctx)
	if err != nil {
		return false, err
	}
	ls, err := st.LogState(ctx)
	if err != nil {
		return false, err
	}
	return set.Sequence == 0 && len(set.Anchors) == 0 && ls.Size() == 0, nil
}

// holdsRoot refuses a store whose trust anchors do not include the root
// in D/certs/root.pem: another CA's store.
func holdsRoot(ctx context.Context, dir string, st store.Store, name string) error {
	root, err := readCert(filepath.Join(dir, RootCertFile))
	if err != nil {
		return err
	}
	set, err := st.Anchors(ctx)
	if err != nil {
		return err
	}
	for _, a := range set.Anchors {
		if bytes.Equal(a.Root, root.Raw) {
			return nil
		}
	}
	return fmt.Errorf("%s holds another CA's trust anchors (none has the root %s in %s): point agentca.json's storage at this CA's store, or restore it from a backup (docs/operations.md)",
		name, Fingerprint(root), filepath.Join(dir, RootCertFile))
}
