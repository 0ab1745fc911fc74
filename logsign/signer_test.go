package logsign_test

// The signer's start-up check of the stored log and its tree heads on a
// bbolt store. Identifiers start with logS.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

func logSKey(t *testing.T) *translog.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// logSIssue stores a certificate with its log entry through s.
func logSIssue(t *testing.T, s store.Store) (uint64, *translog.Leaf) {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 1
	now := time.Now()
	c := store.Certificate{Serial: hex.EncodeToString(b), SPIFFEID: "spiffe://example.org/a", Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now, NotAfter: now.Add(time.Hour), DER: append([]byte{0x30, 0x81}, b...)}
	leaf, err := translog.NewLeaf(c.DER, uint64(now.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	iss := &store.Issuance{Certificate: c, Now: now, LogLeaf: leaf}
	if err := s.Issue(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	return iss.Certificate.LogIndex, leaf
}

// logSStore makes a store lie about its saved tree head.
type logSStore struct {
	logsign.Store
	sth *ct.SignedTreeHead
}

func (s logSStore) TreeHead(context.Context) (*ct.SignedTreeHead, error) { return s.sth, nil }

// TestLogStartRefusesAlteredStore: a signer started on a store that
// contradicts its saved tree head refuses to start (it would publish a
// fork); on the store as it was left it starts, and continues the log.
func TestLogStartRefusesAlteredStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentca.db")
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := logSKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := logsign.New(ctx, logsign.Options{Store: st, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	for range 5 {
		idx, leaf := logSIssue(t, st)
		rc, err := l.Receipt(ctx, idx, leaf)
		if err != nil || rc.Index != idx || rc.TreeSize <= idx {
			t.Fatalf("receipt of %d: %+v, %v", idx, rc, err)
		}
	}
	last := l.Latest()
	cancel()
	<-done // Run saves the latest tree head
	saved, err := st.TreeHead(context.Background())
	if err != nil || saved.TreeSize != 5 || saved.SHA256RootHash != last.SHA256RootHash {
		t.Fatalf("saved tree head %+v, %v; want the last published one (size 5)", saved, err)
	}
	// A saved tree head over another tree of the same size.
	var other translog.State
	for i := range 5 {
		other, _ = other.Append([][]byte{bytes.Repeat([]byte{byte(i)}, 32)}, nil)
	}
	forged, err := key.Sign(other, last.Timestamp+1)
	if err != nil {
		t.Fatal(err)
	}
	bigger, _ := other.Append([][]byte{bytes.Repeat([]byte{9}, 32)}, nil)
	tooBig, _ := key.Sign(bigger, last.Timestamp+1)
	st5, _ := st.LogState(context.Background())
	foreign, _ := logSKey(t).Sign(st5, last.Timestamp+1)
	for _, tc := range []struct {
		name, want string
		sth        *ct.SignedTreeHead
	}{
		{"another tree", "store was altered", forged},
		{"more entries than the log", "lost entries", tooBig},
		{"another key", "does not verify", foreign},
	} {
		_, err := logsign.New(context.Background(), logsign.Options{Store: logSStore{st, tc.sth}, Key: key})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New err = %v, want %q", tc.name, err, tc.want)
		}
	}
	l, err = logsign.New(context.Background(), logsign.Options{Store: st, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if now := l.Latest(); now.TreeSize != 5 || now.Timestamp < last.Timestamp || now.SHA256RootHash != last.SHA256RootHash {
		t.Fatalf("after the restart: size %d at %d, before %d at %d", now.TreeSize, now.Timestamp, last.TreeSize, last.Timestamp)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLogBatchSigner: the tree head a BatchSigner was handed for a
// committed batch is published and proves the batch's receipts without a
// round of the signer's own (no Run), also when it was handed over before
// the Signer started; a BatchSigner of another key is refused.
func TestLogBatchSigner(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key := logSKey(t)
	if _, err := logsign.New(context.Background(), logsign.Options{Store: st, Key: key, Batches: logsign.NewBatchSigner(logSKey(t), nil)}); err == nil {
		t.Fatal("a BatchSigner of another key was taken")
	}
	batches := logsign.NewBatchSigner(key, nil)
	// A batch committed while the signer starts.
	idx, leaf := logSIssue(t, st)
	ls, err := st.LogState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sth, err := batches.SignTreeHead(ls, 0)
	if err != nil {
		t.Fatal(err)
	}
	batches.TreeHeadCommitted(sth)
	l, err := logsign.New(context.Background(), logsign.Options{Store: st, Key: key, Batches: batches})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if i > 0 {
			idx, leaf = logSIssue(t, st)
			if ls, err = st.LogState(context.Background()); err != nil {
				t.Fatal(err)
			}
			if sth, err = batches.SignTreeHead(ls, sth.Timestamp); err != nil {
				t.Fatal(err)
			}
			batches.TreeHeadCommitted(sth)
		}
		if got := l.Latest(); got != sth {
			t.Fatalf("entry %d: the signer publishes size %d, not the batch's tree head (size %d)", idx, got.TreeSize, sth.TreeSize)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rc, err := l.Receipt(ctx, idx, leaf)
		cancel()
		if err != nil || rc.TreeSize != sth.TreeSize || !bytes.Equal(rc.RootHash, sth.SHA256RootHash[:]) {
			t.Fatalf("receipt of %d: %+v, %v; want the batch's tree head (size %d)", idx, rc, err, sth.TreeSize)
		}
	}
}
