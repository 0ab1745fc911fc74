package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHashCacheRewriteInPlace: a file rewritten in place with the same
// size and its modification time restored is hashed again (the change
// time moved); an untouched one is answered from the cache.
func TestHashCacheRewriteInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "exe")
	if err := os.WriteFile(path, []byte("good binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var h hashCache
	want := func(content string) string {
		s := sha256.Sum256([]byte(content))
		return hex.EncodeToString(s[:])
	}
	if s, err := h.sum(path); err != nil || s != want("good binary") {
		t.Fatalf("sum: %s %v", s, err)
	}
	time.Sleep(10 * time.Millisecond) // a change time the kernel can tell apart
	if err := os.WriteFile(path, []byte("evil binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if s, err := h.sum(path); err != nil || s != want("evil binary") {
		t.Errorf("after a rewrite with size and mtime restored: %s %v, want the new content's hash", s, err)
	}
	if len(h.m) != 2 {
		t.Errorf("cache entries: %d, want 2", len(h.m))
	}
	if s, _ := h.sum(path); s != want("evil binary") || len(h.m) != 2 {
		t.Error("an unchanged file is not answered from the cache")
	}
}
