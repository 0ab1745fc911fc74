package bolt

// bbolt-specific tests of the issuance log: the upgrade of a file from
// before the log, read-only opening, the committer's cue, and appends that
// stay gap-free when a failed batch is retried write by write. Identifiers
// start with logTest (other test files here are written by others).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	bbolt "go.etcd.io/bbolt"
)

var logTestNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// logTestCert is a record with a unique DER, and its leaf.
func logTestCert(t testing.TB, notBefore time.Time) (store.Certificate, *translog.Leaf) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 0x01
	c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: notBefore, NotAfter: notBefore.Add(5 * time.Minute), DER: append([]byte{0x30, 0x10}, b...)}
	l, err := translog.NewLeaf(c.DER, uint64(notBefore.Add(time.Minute).UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	return c, l
}

func logTestOpen(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestLogBackfill: opening a file whose certificates predate the log logs
// them all, oldest first, once.
func TestLogBackfill(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentca.db")
	s := logTestOpen(t, path, Options{})
	var certs []store.Certificate
	for i := range 4 {
		c, _ := logTestCert(t, logTestNow.Add(time.Duration(3-i)*time.Minute)) // newest first
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: logTestNow}); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	// Make it a file from before the log: no log state, no log buckets.
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketLogEntries, bucketLogIndex, bucketLogNodes} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Delete(keyLogState)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = logTestOpen(t, path, Options{})
	st, err := s.LogState(ctx)
	if err != nil || st.Size() != 4 {
		t.Fatalf("after the upgrade: %d entries, %v; want 4", st.Size(), err)
	}
	for i, c := range certs {
		rec, err := s.Certificate(ctx, c.Serial)
		if err != nil || !rec.Logged() {
			t.Fatalf("record %d after the upgrade: %+v, %v", i, rec, err)
		}
		if want := uint64(3 - i); rec.LogIndex != want {
			t.Errorf("certificate %d logged at %d, want %d (oldest first)", i, rec.LogIndex, want)
		}
		in, err := s.LogEntries(ctx, rec.LogIndex, rec.LogIndex+1)
		if err != nil {
			t.Fatal(err)
		}
		l, err := translog.ParseLeaf(in[0])
		if err != nil || string(l.Certificate()) != string(c.DER) || l.Timestamp() != rec.LogTimestamp {
			t.Fatalf("entry %d is not certificate %d: %v", rec.LogIndex, i, err)
		}
		if idx, err := s.LogIndex(ctx, l.Hash); err != nil || idx != rec.LogIndex {
			t.Fatalf("LogIndex = %d, %v", idx, err)
		}
	}
	s.Close()
	s = logTestOpen(t, path, Options{})
	if st, err := s.LogState(ctx); err != nil || st.Size() != 4 {
		t.Fatalf("a second open logged again: %d entries, %v", st.Size(), err)
	}
}

// TestLogReadOnly: a read-only store reads everything and writes nothing,
// and cannot open while the daemon holds the file.
func TestLogReadOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentca.db")
	rw := logTestOpen(t, path, Options{})
	c, l := logTestCert(t, logTestNow)
	if err := rw.Issue(ctx, &store.Issuance{Certificate: c, Now: logTestNow, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{ReadOnly: true, LockTimeout: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("read-only open beside the writer: err = %v, want a lock error", err)
	}
	rw.Close()
	ro := logTestOpen(t, path, Options{ReadOnly: true})
	if rec, err := ro.Certificate(ctx, c.Serial); err != nil || !rec.Logged() {
		t.Fatalf("Certificate: %+v, %v", rec, err)
	}
	if st, err := ro.LogState(ctx); err != nil || st.Size() != 1 {
		t.Fatalf("LogState: %d, %v", st.Size(), err)
	}
	c2, l2 := logTestCert(t, logTestNow)
	if err := ro.Issue(ctx, &store.Issuance{Certificate: c2, Now: logTestNow, LogLeaf: l2}); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Issue on a read-only store: err = %v, want ErrReadOnly", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLogOnLogAppend: the committer cues the signer after a commit that
// appended, and only then.
func TestLogOnLogAppend(t *testing.T) {
	ctx := context.Background()
	var cues atomic.Int64
	s := logTestOpen(t, filepath.Join(t.TempDir(), "agentca.db"), Options{OnLogAppend: func() { cues.Add(1) }})
	c, _ := logTestCert(t, logTestNow)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: logTestNow}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, c.Serial, 1, logTestNow); err != nil {
		t.Fatal(err)
	}
	if n := cues.Load(); n != 0 {
		t.Fatalf("%d cues for writes that did not append", n)
	}
	c2, l2 := logTestCert(t, logTestNow)
	iss := &store.Issuance{Certificate: c2, Now: logTestNow, LogLeaf: l2}
	if err := s.Issue(ctx, iss); err != nil {
		t.Fatal(err)
	}
	if n := cues.Load(); n != 1 {
		t.Fatalf("%d cues after one append, want 1 (before Issue returned)", n)
	}
	// A refused append does not cue.
	if err := s.Issue(ctx, iss); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatal(err)
	}
	if n := cues.Load(); n != 1 {
		t.Fatalf("%d cues after a refusal, want still 1", n)
	}
}

// TestLogBatchRetry: a batch that fails as a whole is retried write by
// write; the appends of the retried writes read the committed state, so
// the log stays gap-free and every record names its own entry.
func TestLogBatchRetry(t *testing.T) {
	ctx := context.Background()
	s := logTestOpen(t, filepath.Join(t.TempDir(), "agentca.db"), Options{})
	// Hold the committer so that what follows queues into one batch.
	release := make(chan struct{})
	held := make(chan struct{})
	go func() {
		_ = s.write(ctx, func(tx *bbolt.Tx) error { close(held); <-release; return nil })
	}()
	<-held
	const n = 20
	var wg sync.WaitGroup
	results := make([]*store.Issuance, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, l := logTestCert(t, logTestNow)
			results[i] = &store.Issuance{Certificate: c, Now: logTestNow, LogLeaf: l}
			errs[i] = s.Issue(ctx, results[i])
		}()
	}
	failed := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Writes something, then fails: not a refusal, so the whole
		// batch rolls back and is retried one by one.
		failed <- s.write(ctx, func(tx *bbolt.Tx) error {
			if err := tx.Bucket(bucketMeta).Put([]byte("junk"), []byte("x")); err != nil {
				return err
			}
			return errors.New("disk on fire")
		})
	}()
	// Let every write queue behind the held one.
	for len(s.ops) < n+1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if err := <-failed; err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("failing write: err = %v", err)
	}
	seen := make([]bool, n)
	for i, iss := range results {
		if errs[i] != nil {
			t.Fatalf("issuance %d: %v", i, errs[i])
		}
		idx := iss.Certificate.LogIndex
		if idx >= n || seen[idx] {
			t.Fatalf("issuance %d got index %d (gap or duplicate)", i, idx)
		}
		seen[idx] = true
		rec, err := s.Certificate(ctx, iss.Certificate.Serial)
		if err != nil || rec.LogIndex != idx {
			t.Fatalf("record %d names entry %d, Issue said %d: %v", i, rec.LogIndex, idx, err)
		}
		in, err := s.LogEntries(ctx, idx, idx+1)
		if err != nil || string(in[0]) != string(iss.LogLeaf.Input) {
			t.Fatalf("entry %d is not issuance %d's leaf: %v", idx, i, err)
		}
	}
	st, err := s.LogState(ctx)
	if err != nil || st.Size() != n {
		t.Fatalf("log size %d, %v; want %d", st.Size(), err, n)
	}
	if err := s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("junk")) != nil {
			return errors.New("the failed write's data was committed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
