package logaudit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/store/logaudit"
	"github.com/agentca/agentca/translog"
)

func issue(t *testing.T, s store.Store, logged bool) store.Certificate {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 0x01
	now := time.Now().Truncate(time.Second)
	c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now, NotAfter: now.Add(time.Minute), DER: append([]byte{0x30, 0x10}, b...)}
	iss := &store.Issuance{Certificate: c, Now: now}
	if logged {
		l, err := translog.NewLeaf(c.DER, uint64(now.UnixMilli()))
		if err != nil {
			t.Fatal(err)
		}
		iss.LogLeaf = l
	}
	if err := s.Issue(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		issue(t, s, true)
	}
	rep, err := logaudit.Run(ctx, s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || !strings.Contains(rep.Findings[0], "no signed tree head") {
		t.Fatalf("log without a tree head: findings %q", rep.Findings)
	}
	st, _ := s.LogState(ctx)
	sth, err := signer.Sign(st, uint64(time.Now().UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveTreeHead(ctx, sth); err != nil {
		t.Fatal(err)
	}
	rep, err = logaudit.Run(ctx, s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 || rep.Entries != 7 || rep.Certificates != 7 || rep.TreeHead == nil {
		t.Fatalf("intact log: %+v", rep)
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	unlogged := issue(t, s, false)
	rep, err = logaudit.Run(ctx, s, other.Public())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"does not verify with the log key", "certificate " + unlogged.Serial + " (spiffe://example.org/a) has no log entry"}
	if len(rep.Findings) != len(want) {
		t.Fatalf("findings %q, want %q", rep.Findings, want)
	}
	for i, w := range want {
		if !strings.Contains(rep.Findings[i], w) {
			t.Errorf("finding %d %q does not say %q", i, rep.Findings[i], w)
		}
	}
}
