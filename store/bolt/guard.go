package bolt

// A damaged file: bbolt maps the file into memory and trusts its pages, so
// a truncated file faults (SIGBUS) and a corrupted page fails one of
// bbolt's assertions (a panic). Every read and write transaction runs
// under guard, which turns both into an error wrapping store.ErrDamaged
// that names the file, so a command prints one line and a request gets
// 503 instead of a goroutine dump.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
)

// damaged is the error for a fault or a panic inside bbolt on path.
func damaged(path string, v any) error {
	return fmt.Errorf("%w: %s: %v: stop agentca, run agentca store check, and restore the file from a backup (docs/operations.md)",
		store.ErrDamaged, path, v)
}

// guard runs fn with memory faults turned into panics (a read past the
// end of a truncated file) and recovers them, and bbolt's own panics,
// as a store.ErrDamaged error.
func guard(path string, fn func() error) (err error) {
	prev := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(prev)
		if v := recover(); v != nil {
			err = damaged(path, v)
		}
	}()
	return fn()
}

// updateTx runs fn in a write transaction and commits it (bbolt's
// DB.Update), except that when fn or the commit panics (a damaged page)
// the transaction is abandoned rather than rolled back: bbolt's rollback
// of a write rebuilds the freelist by walking every page in a goroutine
// of its own, where the damage would panic past any recover and kill the
// process. The writer lock stays held; the store marks itself damaged
// and takes no more writes.
func updateTx(db *bbolt.DB, fn func(*bbolt.Tx) error) error {
	tx, err := db.Begin(true)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// view is db.View under guard.
func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	return guard(s.path, func() error { return s.db.View(fn) })
}

// checkFile refuses, before bbolt maps it, a file that is missing or
// empty (bbolt would make a new store of it) when mustExist is set.
func checkFile(path string, mustExist bool) error {
	if !mustExist {
		return nil
	}
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist: restore the CA's store from a backup (docs/operations.md); a new store is made only by agentca init", store.ErrNoStore, path)
	case err != nil:
		return fmt.Errorf("store: %w", err)
	case !info.Mode().IsRegular():
		return fmt.Errorf("%w: %s is not a regular file", store.ErrNoStore, path)
	case info.Size() == 0:
		return fmt.Errorf("%w: %s is empty: restore the CA's store from a backup (docs/operations.md); a new store is made only by agentca init", store.ErrNoStore, path)
	}
	return nil
}

// checkSize refuses a file shorter than the pages its meta page says it
// holds (a truncated file), before anything reads those pages.
func checkSize(db *bbolt.DB, path string) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	var want int64
	if err := db.View(func(tx *bbolt.Tx) error { want = tx.Size(); return nil }); err != nil {
		return err
	}
	if info.Size() < want {
		return damaged(path, fmt.Sprintf("the file is %d bytes, its pages need %d (truncated)", info.Size(), want))
	}
	return nil
}

// Check runs bbolt's consistency check over every page of the file (for
// agentca store check, on a stopped store) and returns every problem it
// found, nil when there is none.
func (s *Store) Check(ctx context.Context) []error {
	var errs []error
	if err := guard(s.path, func() error { return walk(s.db) }); err != nil {
		return []error{err}
	}
	err := s.view(func(tx *bbolt.Tx) error {
		more := 0
		for e := range tx.Check() { // drained: the check reads the tx
			if len(errs) < 20 {
				errs = append(errs, fmt.Errorf("%s: %w", s.path, e))
			} else {
				more++
			}
		}
		if more > 0 {
			errs = append(errs, fmt.Errorf("%s: and %d more problems", s.path, more))
		}
		return ctx.Err()
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Backup writes a consistent copy of the whole file to w (one read
// transaction: writers go on meanwhile) and returns its size.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// walk reads every page the file's buckets reach, so that a corrupted
// page fails here, under guard, rather than in the goroutine bbolt starts
// to rebuild its freelist (DB.freepages), where a panic cannot be
// recovered and kills the process.
func walk(db *bbolt.DB) error {
	var visit func(b *bbolt.Bucket) error
	visit = func(b *bbolt.Bucket) error {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					if err := visit(nb); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return visit(b) })
	})
}

// freelistSynced reports whether the file's current meta page (of the
// two, the one with the higher transaction id) records a freelist page:
// without one, bbolt rebuilds the freelist by walking every page
// (bbolt's meta layout: after the 16-byte page header, magic, version,
// page size, flags, root bucket (16 bytes), freelist page id, high water
// mark, transaction id; little-endian as bbolt writes it on the platforms
// agentca supports).
func freelistSynced(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 72)
	if _, err := f.ReadAt(head, 0); err != nil {
		return false
	}
	pageSize := int64(binary.LittleEndian.Uint32(head[24:]))
	if pageSize < 512 || pageSize > 1<<20 {
		return false
	}
	second := make([]byte, 72)
	if _, err := f.ReadAt(second, pageSize); err != nil {
		return false
	}
	meta := head
	if binary.LittleEndian.Uint64(second[64:]) > binary.LittleEndian.Uint64(head[64:]) {
		meta = second
	}
	return binary.LittleEndian.Uint64(meta[48:]) != ^uint64(0)
}
