package bolt_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// tokens stores n join tokens (about 200 bytes each) so the file spans
// many pages.
func tokens(t *testing.T, s *bolt.Store, n int) [][]byte {
	t.Helper()
	toks := make([]store.JoinToken, n)
	hashes := make([][]byte, n)
	for i := range toks {
		h := make([]byte, 32)
		if _, err := rand.Read(h); err != nil {
			t.Fatal(err)
		}
		hashes[i] = h
		toks[i] = store.JoinToken{Hash: h, SPIFFEID: "spiffe://example.org/agent/x", Provisioner: "join",
			CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	}
	if err := s.CreateJoinTokens(context.Background(), toks); err != nil {
		t.Fatal(err)
	}
	return hashes
}

// TestMustExist: a missing or empty file is refused, and not created.
func TestMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	for _, ro := range []bool{false, true} {
		_, err := bolt.Open(path, bolt.Options{MustExist: true, ReadOnly: ro})
		if !errors.Is(err, store.ErrNoStore) || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("missing file (read-only %v): %v", ro, err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("Open created the file (%v)", err)
		}
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bolt.Open(path, bolt.Options{MustExist: true}); !errors.Is(err, store.ErrNoStore) || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty file: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("Open wrote the empty file (%v)", err)
	}
}

// TestTruncatedWhileOpen: a file cut short under a running store makes
// reads and writes return store.ErrDamaged naming the file, instead of a
// SIGBUS that kills the process; Close returns.
func TestTruncatedWhileOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hashes := tokens(t, s, 3000)
	if err := os.Truncate(path, 16<<10); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var readErr error
	for _, h := range hashes {
		if _, readErr = s.JoinToken(ctx, h); readErr != nil {
			break
		}
	}
	if !errors.Is(readErr, store.ErrDamaged) || !strings.Contains(readErr.Error(), path) {
		t.Fatalf("read after truncation: %v, want store.ErrDamaged naming the file", readErr)
	}
	werr := s.CreateJoinTokens(ctx, []store.JoinToken{{Hash: []byte("0123456789abcdef0123456789abcdef"), ExpiresAt: time.Now().Add(time.Hour)}})
	if !errors.Is(werr, store.ErrDamaged) {
		t.Fatalf("write after truncation: %v, want store.ErrDamaged", werr)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a damaged file")
	}
}

// TestCheckCorrupted: pages overwritten with garbage fail Open (a file
// without a saved freelist, as after a crash) and Check with
// store.ErrDamaged, never a panic.
func TestCheckCorrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tokens(t, s, 3000)
	if errs := s.Check(context.Background()); len(errs) != 0 {
		t.Fatalf("Check of a sound file: %v", errs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(b[2*4096:]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err := bolt.Open(path, bolt.Options{ReadOnly: true, MustExist: true})
	if err != nil {
		if !errors.Is(err, store.ErrDamaged) {
			t.Fatalf("read-only open: %v", err)
		}
	} else {
		errs := ro.Check(context.Background())
		if len(errs) == 0 {
			t.Fatal("Check found nothing in a corrupted file")
		}
		ro.Close()
	}
	if _, err := bolt.Open(path, bolt.Options{MustExist: true}); !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("read-write open of a corrupted file: %v, want store.ErrDamaged", err)
	}
}
