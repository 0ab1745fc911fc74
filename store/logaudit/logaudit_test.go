package logaudit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"math/big"
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

// newLog opens a fresh bbolt store and makes a log key and its signer.
func newLog(t *testing.T) (*bolt.Store, *ecdsa.PrivateKey, *translog.Signer) {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := translog.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s, key, signer
}

// saveHead signs and saves a tree head of the current log; it returns the
// log's state.
func saveHead(t *testing.T, s store.Store, signer *translog.Signer) translog.State {
	t.Helper()
	ctx := context.Background()
	st, err := s.LogState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sth, err := signer.Sign(st, uint64(time.Now().UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveTreeHead(ctx, sth); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	s, key, signer := newLog(t)
	for range 7 {
		issue(t, s, true)
	}
	rep, err := logaudit.Run(ctx, s, s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || !strings.Contains(rep.Findings[0], "no signed tree head") {
		t.Fatalf("log without a tree head: findings %q", rep.Findings)
	}
	saveHead(t, s, signer)
	rep, err = logaudit.Run(ctx, s, s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 || rep.Entries != 7 || rep.Certificates != 7 || rep.TreeHead == nil {
		t.Fatalf("intact log: %+v", rep)
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	unlogged := issue(t, s, false)
	rep, err = logaudit.Run(ctx, s, s, other.Public())
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

// issueReal records a real (self-signed) certificate valid until notAfter,
// with its log entry.
func issueReal(t *testing.T, s store.Store, key *ecdsa.PrivateKey, notAfter time.Time) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 0x01
	sn := new(big.Int).SetBytes(b)
	tmpl := &x509.Certificate{SerialNumber: sn, NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	l, err := translog.NewLeaf(der, uint64(now.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	c := store.Certificate{Serial: hex.EncodeToString(sn.Bytes()), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: tmpl.NotBefore, NotAfter: notAfter, DER: der}
	if err := s.Issue(context.Background(), &store.Issuance{Certificate: c, Now: now, LogLeaf: l}); err != nil {
		t.Fatal(err)
	}
}

// Retention removes the records of long-expired certificates while the
// log keeps their entries: with the retention given, the audit counts
// them as swept, not as orphans; an entry of an unexpired certificate
// without its record is still a finding.
func TestRunAfterRetention(t *testing.T) {
	ctx := context.Background()
	s, key, signer := newLog(t)
	now := time.Now()
	retention := 7 * 24 * time.Hour
	for range 3 {
		issueReal(t, s, key, now.Add(-10*24*time.Hour))
	}
	for range 2 {
		issueReal(t, s, key, now.Add(time.Hour))
	}
	saveHead(t, s, signer)
	if sw, err := s.Sweep(ctx, now.Add(-retention), 100); err != nil || sw.Certificates != 3 {
		t.Fatalf("Sweep: %+v %v", sw, err)
	}
	rep, err := logaudit.RunWithOptions(ctx, s, s, logaudit.Options{LogKey: key.Public(), SweptBefore: now.Add(-retention)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 || rep.Swept != 3 || rep.Certificates != 2 || rep.Entries != 5 {
		t.Fatalf("audit after retention: %+v", rep)
	}
	// Without the retention the swept records are orphans.
	rep, err = logaudit.Run(ctx, s, s, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Swept != 0 || len(rep.Findings) != 4 || !strings.Contains(rep.Findings[0], "has no certificate record") {
		t.Fatalf("audit ignoring retention: %+v", rep)
	}
}

// laggingStore reports the log state it was given: what an audit of a
// live store sees when certificates are appended after it read the size.
type laggingStore struct {
	store.Store
	st translog.State
}

func (l laggingStore) LogState(context.Context) (translog.State, error) { return l.st, nil }

func TestRunLive(t *testing.T) {
	ctx := context.Background()
	s, key, signer := newLog(t)
	for range 4 {
		issue(t, s, true)
	}
	st := saveHead(t, s, signer)
	for range 3 { // appended while the audit runs
		issue(t, s, true)
	}
	lag := laggingStore{Store: s, st: st}
	rep, err := logaudit.RunWithOptions(ctx, lag, lag, logaudit.Options{LogKey: key.Public(), Live: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 || rep.Entries != 4 {
		t.Fatalf("live audit: %+v", rep)
	}
	rep, err = logaudit.RunWithOptions(ctx, lag, lag, logaudit.Options{LogKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) == 0 || !strings.Contains(rep.Findings[0], "beyond the log") {
		t.Fatalf("offline audit of the same store: want records beyond the log, got %q", rep.Findings)
	}
}
