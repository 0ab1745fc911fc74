package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

func TestSweepOnceInBatches(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var toks []store.JoinToken
	for i := range 7 {
		toks = append(toks, store.JoinToken{Hash: []byte{byte(i)}, SPIFFEID: "spiffe://example.org/a", Provisioner: "join",
			CreatedAt: now.Add(-9 * 24 * time.Hour), ExpiresAt: now.Add(-8 * 24 * time.Hour)})
	}
	toks = append(toks, store.JoinToken{Hash: []byte("live"), SPIFFEID: "spiffe://example.org/a", Provisioner: "join",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err := st.CreateJoinTokens(ctx, toks); err != nil {
		t.Fatal(err)
	}
	got, err := sweepOnce(ctx, st, now.Add(-7*24*time.Hour), 3, slog.New(slog.DiscardHandler))
	if err != nil || got.JoinTokens != 7 || got.Certificates != 0 {
		t.Fatalf("sweepOnce = %+v, %v, want 7 join tokens", got, err)
	}
	if _, err := st.JoinToken(ctx, []byte("live")); err != nil {
		t.Fatalf("live token: %v", err)
	}
}
