package bolt_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/storetest"
	bbolt "go.etcd.io/bbolt"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = bolt.Open(path, bolt.Options{LockTimeout: 50_000_000})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open: err = %v, want a lock error", err)
	}
}

// TestExportOldFile: a file an older agentca wrote (here: no tasks_ended
// bucket, as before tasks existed) is not exported but refused with the
// way to upgrade it; after a read-write open it exports.
func TestExportOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket([]byte("tasks_ended")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = ro.Export(context.Background(), func(store.Item) error { return nil })
	ro.Close()
	if err == nil || !strings.Contains(err.Error(), "run agentca serve once") {
		t.Fatalf("export of an old file: %v", err)
	}
	rw, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	if err := rw.Export(context.Background(), func(store.Item) error { return nil }); err != nil {
		t.Fatalf("export after an upgrade: %v", err)
	}
}
