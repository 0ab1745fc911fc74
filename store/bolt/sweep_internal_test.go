package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
)

// A file from before the expiry indexes gets them at Open, so its old
// records can be swept.
func TestSweepIndexesOldFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "agentca.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	rec := store.Certificate{Serial: "0badc0de", SPIFFEID: "spiffe://example.org/old", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-47 * time.Hour), DER: []byte{0x30, 0x01, 0x02}}
	if err := s.Issue(ctx, &store.Issuance{Certificate: rec, Now: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJoinTokens(ctx, []store.JoinToken{{Hash: []byte("h"), SPIFFEID: rec.SPIFFEID, Provisioner: "join",
		CreatedAt: now.Add(-48 * time.Hour), ExpiresAt: now.Add(-47 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	// Make it a file from before retention.
	err = s.db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketCertExpiry, bucketTokenExpiry} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Delete(keyExpiryIndex)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Sweep(ctx, now, 10)
	if err != nil || got != (store.Swept{Certificates: 1, JoinTokens: 1}) {
		t.Fatalf("Sweep = %+v, %v, want the old certificate and token", got, err)
	}
	if _, err := s.Certificate(ctx, rec.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old certificate after the sweep: %v", err)
	}
}
