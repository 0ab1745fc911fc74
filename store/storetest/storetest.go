// Package storetest is the conformance suite every store.Store backend
// must pass. A backend's test calls Run with a constructor that returns a
// fresh, empty store.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
)

// Run runs the suite. open must return a new empty store; the suite closes
// it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"IssueAndGet", testIssueAndGet},
		{"DuplicateSerial", testDuplicateSerial},
		{"SerialForms", testSerialForms},
		{"JoinTokenSingleUse", testJoinTokenSingleUse},
		{"JoinTokenRefusals", testJoinTokenRefusals},
		{"JoinTokenConcurrent", testJoinTokenConcurrent},
		{"RefusalWritesNothing", testRefusalWritesNothing},
		{"ReplayKeys", testReplayKeys},
		{"DuplicateJoinToken", testDuplicateJoinToken},
		{"List", testList},
		{"ConcurrentIssue", testConcurrentIssue},
		{"CanceledContext", testCanceledContext},
		{"Revoke", testRevoke},
		{"Revocations", testRevocations},
		{"Closed", testClosed},
		{"Sweep", testSweep},
		{"SweepLimit", testSweepLimit},
	}
	tests = append(tests, logTests...)
	tests = append(tests, anchorTests...)
	tests = append(tests, lineageTests...)
	tests = append(tests, workloadTests...)
	tests = append(tests, checkTests...)
	tests = append(tests, federationTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func randSerial(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[0] = b[0]&0x7f | 0x01
	return hex.EncodeToString(b)
}

func cert(t *testing.T, id string) store.Certificate {
	return store.Certificate{
		Serial: randSerial(t), SPIFFEID: id, Provisioner: "join", IssuerSKI: "abcd",
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(5 * time.Minute), DER: []byte{0x30, 0x01, 0x02},
	}
}

func newToken(t *testing.T, s store.Store, id string, ttl time.Duration) []byte {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(raw)
	err := s.CreateJoinTokens(context.Background(), []store.JoinToken{{
		Hash: h[:], SPIFFEID: id, Provisioner: "join", CreatedAt: now, ExpiresAt: now.Add(ttl),
	}})
	if err != nil {
		t.Fatalf("CreateJoinTokens: %v", err)
	}
	return h[:]
}

func testIssueAndGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := cert(t, "spiffe://example.org/a")
	c.DNSNames = []string{"a.example.org"}
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	got, err := s.Certificate(ctx, c.Serial)
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if got.SPIFFEID != c.SPIFFEID || got.Serial != c.Serial || !got.NotAfter.Equal(c.NotAfter) ||
		string(got.DER) != string(c.DER) || len(got.DNSNames) != 1 || got.IssuerSKI != c.IssuerSKI {
		t.Fatalf("Certificate = %+v, want %+v", got, c)
	}
	if _, err := s.Certificate(ctx, randSerial(t)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown serial: err = %v, want ErrNotFound", err)
	}
}

func testDuplicateSerial(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := cert(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatal(err)
	}
	c2 := c
	c2.SPIFFEID = "spiffe://example.org/b"
	if err := s.Issue(ctx, &store.Issuance{Certificate: c2, Now: now}); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("second Issue: err = %v, want ErrDuplicateSerial", err)
	}
	got, err := s.Certificate(ctx, c.Serial)
	if err != nil || got.SPIFFEID != c.SPIFFEID {
		t.Fatalf("first record overwritten: %+v, %v", got, err)
	}
}

func testSerialForms(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := cert(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{c.Serial, "00" + c.Serial, fmt.Sprintf("%X", mustHex(t, c.Serial))} {
		if _, err := s.Certificate(ctx, form); err != nil {
			t.Errorf("Certificate(%q): %v", form, err)
		}
	}
	for _, bad := range []string{"", "zz", "0", "-1"} {
		if _, err := s.Certificate(ctx, bad); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Certificate(%q): err = %v, want a bad-serial error", bad, err)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testJoinTokenSingleUse(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	h := newToken(t, s, id, 15*time.Minute)
	tok, err := s.JoinToken(ctx, h)
	if err != nil || tok.SPIFFEID != id || tok.UsedBy != "" {
		t.Fatalf("JoinToken = %+v, %v", tok, err)
	}
	c := cert(t, id)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, JoinToken: h, Now: now}); err != nil {
		t.Fatalf("first use: %v", err)
	}
	tok, err = s.JoinToken(ctx, h)
	if err != nil || tok.UsedBy != c.Serial {
		t.Fatalf("after use: %+v, %v; want UsedBy %s", tok, err, c.Serial)
	}
	c2 := cert(t, id)
	if err := s.Issue(ctx, &store.Issuance{Certificate: c2, JoinToken: h, Now: now}); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("second use: err = %v, want ErrTokenInvalid", err)
	}
	if _, err := s.Certificate(ctx, c2.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused issuance left a certificate: %v", err)
	}
}

func testJoinTokenRefusals(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	unknown := sha256.Sum256([]byte("never created"))
	tests := []struct {
		name string
		hash []byte
		id   string
		prov string
		now  time.Time
	}{
		{"unknown", unknown[:], id, "join", now},
		{"expired", newToken(t, s, id, time.Minute), id, "join", now.Add(time.Minute)},
		{"other identity", newToken(t, s, id, time.Minute), "spiffe://example.org/agent/y", "join", now},
		{"other provisioner", newToken(t, s, id, time.Minute), id, "other", now},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cert(t, tc.id)
			c.Provisioner = tc.prov
			err := s.Issue(ctx, &store.Issuance{Certificate: c, JoinToken: tc.hash, Now: tc.now})
			if !errors.Is(err, store.ErrTokenInvalid) {
				t.Fatalf("err = %v, want ErrTokenInvalid", err)
			}
		})
	}
}

func testJoinTokenConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	h := newToken(t, s, id, time.Hour)
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	serials := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cert(t, id)
			serials[i] = c.Serial
			<-start
			errs[i] = s.Issue(ctx, &store.Issuance{Certificate: c, JoinToken: h, Now: now})
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrTokenInvalid):
			if _, err := s.Certificate(ctx, serials[i]); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("refused issuance %d left a certificate", i)
			}
		default:
			t.Errorf("use %d: unexpected error %v", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses succeeded, want exactly 1", ok, n)
	}
}

func testRefusalWritesNothing(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/agent/x"
	h := newToken(t, s, id, time.Hour)
	existing := cert(t, id)
	if err := s.Issue(ctx, &store.Issuance{Certificate: existing, Now: now}); err != nil {
		t.Fatal(err)
	}
	// Duplicate serial with a valid token and a fresh replay key: the
	// token must stay unused and the key must not be created.
	dup := existing
	err := s.Issue(ctx, &store.Issuance{Certificate: dup, JoinToken: h, Once: []string{"k1"}, Now: now})
	if !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("err = %v, want ErrDuplicateSerial", err)
	}
	tok, err := s.JoinToken(ctx, h)
	if err != nil || tok.UsedBy != "" {
		t.Fatalf("token consumed by a refused issuance: %+v, %v", tok, err)
	}
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, id), JoinToken: h, Once: []string{"k1"}, Now: now}); err != nil {
		t.Fatalf("token or replay key unusable after a refused issuance: %v", err)
	}
}

func testReplayKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/a"
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, id), Once: []string{"jti:k8s:1", "tofu:aws:i-1"}, Now: now}); err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{{"jti:k8s:1"}, {"jti:k8s:2", "tofu:aws:i-1"}, {"x", "x"}} {
		c := cert(t, id)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Once: keys, Now: now}); !errors.Is(err, store.ErrReplay) {
			t.Fatalf("Once %v: err = %v, want ErrReplay", keys, err)
		}
	}
	// jti:k8s:2 was refused with the batch above; it must still be free.
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, id), Once: []string{"jti:k8s:2"}, Now: now}); err != nil {
		t.Fatalf("key from a refused issuance was recorded: %v", err)
	}
	// An operator clears a TOFU entry: the instance may enroll again.
	if serial, err := s.ReplayKey(ctx, "tofu:aws:i-1"); err != nil || serial == "" {
		t.Fatalf("ReplayKey = %q, %v", serial, err)
	}
	if err := s.DeleteReplayKey(ctx, "tofu:aws:i-1"); err != nil {
		t.Fatalf("DeleteReplayKey: %v", err)
	}
	if _, err := s.ReplayKey(ctx, "tofu:aws:i-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteReplayKey(ctx, "tofu:aws:i-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: err = %v, want ErrNotFound", err)
	}
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, id), Once: []string{"tofu:aws:i-1"}, Now: now}); err != nil {
		t.Fatalf("cleared key still refuses: %v", err)
	}
}

func testDuplicateJoinToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	h := sha256.Sum256([]byte("t"))
	tok := store.JoinToken{Hash: h[:], SPIFFEID: "spiffe://example.org/a", Provisioner: "join", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateJoinTokens(ctx, []store.JoinToken{tok}); err != nil {
		t.Fatal(err)
	}
	other := sha256.Sum256([]byte("u"))
	tok2 := tok
	tok2.Hash = other[:]
	if err := s.CreateJoinTokens(ctx, []store.JoinToken{tok2, tok}); !errors.Is(err, store.ErrDuplicateToken) {
		t.Fatalf("err = %v, want ErrDuplicateToken", err)
	}
	if _, err := s.JoinToken(ctx, other[:]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused batch stored a token: %v", err)
	}
}

func testList(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 25 {
		id := "spiffe://example.org/a"
		if i%5 == 0 {
			id = "spiffe://example.org/b"
		}
		c := cert(t, id)
		want[c.Serial] = true
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	after := ""
	for {
		page, err := s.ListCertificates(ctx, store.ListOptions{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, c := range page {
			if c.Serial <= after {
				t.Fatalf("serial %s not after %s", c.Serial, after)
			}
			seen[c.Serial] = true
			after = c.Serial
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("paged through %d certificates, want %d", len(seen), len(want))
	}
	bs, err := s.ListCertificates(ctx, store.ListOptions{SPIFFEID: "spiffe://example.org/b"})
	if err != nil || len(bs) != 5 {
		t.Fatalf("filter by SPIFFE ID: %d records, %v; want 5", len(bs), err)
	}
}

func testConcurrentIssue(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	serials := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cert(t, "spiffe://example.org/a")
			if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
				errs <- err
				return
			}
			serials <- c.Serial
		}()
	}
	wg.Wait()
	close(errs)
	close(serials)
	for err := range errs {
		t.Fatalf("concurrent Issue: %v", err)
	}
	for sn := range serials {
		if _, err := s.Certificate(ctx, sn); err != nil {
			t.Fatalf("acknowledged certificate %s missing: %v", sn, err)
		}
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := cert(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := s.Certificate(context.Background(), c.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("canceled issuance was recorded: %v", err)
	}
}

func testRevoke(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.Revoke(ctx, randSerial(t), 1, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown: err = %v, want ErrNotFound", err)
	}
	c := cert(t, "spiffe://example.org/a")
	if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Revoke(ctx, c.Serial, 1, now)
	if err != nil || !got.Revoked() || got.RevocationReason != 1 || !got.RevokedAt.Equal(now) {
		t.Fatalf("Revoke = %+v, %v", got, err)
	}
	again, err := s.Revoke(ctx, c.Serial, 4, now.Add(time.Minute))
	if err != nil || again.RevocationReason != 1 || !again.RevokedAt.Equal(now) {
		t.Fatalf("second Revoke changed the revocation: %+v, %v", again, err)
	}
	rec, err := s.Certificate(ctx, c.Serial)
	if err != nil || !rec.Revoked() || rec.RevocationReason != 1 {
		t.Fatalf("record after revoke: %+v, %v", rec, err)
	}
}

func testRevocations(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := map[string]bool{}
	for i := range 12 {
		c := cert(t, "spiffe://example.org/a")
		switch {
		case i%4 == 0:
			c.IssuerSKI = "beef" // another issuer
		case i%4 == 1:
			c.NotAfter = now.Add(-time.Second) // expired: not listed
		}
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			continue // not revoked
		}
		if _, err := s.Revoke(ctx, c.Serial, 1, now); err != nil {
			t.Fatal(err)
		}
		if c.IssuerSKI == "abcd" && c.NotAfter.After(now) {
			want[c.Serial] = true
		}
	}
	got, err := s.Revocations(ctx, "abcd", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Revocations = %d entries, want %d", len(got), len(want))
	}
	for i, r := range got {
		if !want[r.Serial] || r.Reason != 1 || !r.RevokedAt.Equal(now) {
			t.Fatalf("unexpected entry %+v", r)
		}
		if i > 0 && got[i-1].Serial >= r.Serial {
			t.Fatalf("entries not in serial order")
		}
	}
}

func testClosed(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Issue(context.Background(), &store.Issuance{Certificate: cert(t, "spiffe://example.org/a"), Now: now}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Issue after Close: err = %v, want ErrClosed", err)
	}
}

// testSweep: records past the cutoff leave the store (a revoked
// certificate's revocation entry with it), the others stay, and the log
// keeps every entry.
func testSweep(t *testing.T, s store.Store) {
	ctx := context.Background()
	cutoff := now.Add(-7 * 24 * time.Hour)
	live, liveLeaf := logged(t, "spiffe://example.org/live")
	old, oldLeaf := logged(t, "spiffe://example.org/old")
	old.NotAfter = cutoff.Add(-time.Hour)
	atCut := cert(t, "spiffe://example.org/at-cutoff")
	atCut.NotAfter = cutoff.Add(time.Second)
	for _, iss := range []*store.Issuance{
		{Certificate: live, Now: now, LogLeaf: liveLeaf},
		{Certificate: old, Now: now, LogLeaf: oldLeaf},
		{Certificate: atCut, Now: now},
	} {
		if err := s.Issue(ctx, iss); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Revoke(ctx, old.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, atCut.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	oldTok := newToken(t, s, "spiffe://example.org/old", -7*24*time.Hour-time.Minute)
	liveTok := newToken(t, s, "spiffe://example.org/live", time.Hour)
	sizeBefore := logSize(t, s)

	got, err := s.Sweep(ctx, cutoff, 100)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if got != (store.Swept{Certificates: 1, JoinTokens: 1}) {
		t.Fatalf("Sweep = %+v, want 1 certificate and 1 join token, no more", got)
	}
	if _, err := s.Certificate(ctx, old.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("swept certificate: err = %v, want ErrNotFound", err)
	}
	for _, c := range []store.Certificate{live, atCut} {
		if _, err := s.Certificate(ctx, c.Serial); err != nil {
			t.Fatalf("certificate %s swept too early: %v", c.SPIFFEID, err)
		}
	}
	revs, err := s.Revocations(ctx, "abcd", cutoff.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 1 || revs[0].Serial != atCut.Serial {
		t.Fatalf("Revocations after the sweep = %+v, want only %s", revs, atCut.Serial)
	}
	if _, err := s.JoinToken(ctx, oldTok); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("swept join token: err = %v, want ErrNotFound", err)
	}
	if _, err := s.JoinToken(ctx, liveTok); err != nil {
		t.Fatalf("live join token swept: %v", err)
	}
	if size := logSize(t, s); size != sizeBefore {
		t.Fatalf("log size %d after the sweep, want %d", size, sizeBefore)
	}
	if idx, err := s.LogIndex(ctx, oldLeaf.Hash); err != nil {
		t.Fatalf("swept certificate's log entry: %v", err)
	} else if e, err := s.LogEntries(ctx, idx, idx+1); err != nil || len(e) != 1 || string(e[0]) != string(oldLeaf.Input) {
		t.Fatalf("swept certificate's log entry = %x, %v", e, err)
	}
	if got, err := s.Sweep(ctx, cutoff, 100); err != nil || got != (store.Swept{}) {
		t.Fatalf("second Sweep = %+v, %v, want nothing", got, err)
	}
	// The store still records new certificates after a sweep.
	if err := s.Issue(ctx, &store.Issuance{Certificate: cert(t, "spiffe://example.org/after"), Now: now}); err != nil {
		t.Fatalf("Issue after Sweep: %v", err)
	}
}

// testSweepLimit: a sweep removes at most limit records and says when
// there are more.
func testSweepLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	for range 5 {
		c := cert(t, "spiffe://example.org/old")
		c.NotAfter = now.Add(-time.Hour)
		if err := s.Issue(ctx, &store.Issuance{Certificate: c, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i := 0; ; i++ {
		got, err := s.Sweep(ctx, now, 2)
		if err != nil {
			t.Fatal(err)
		}
		if got.Certificates > 2 {
			t.Fatalf("Sweep(limit 2) removed %d", got.Certificates)
		}
		total += got.Certificates
		if !got.More {
			break
		}
		if i > 5 {
			t.Fatal("Sweep keeps reporting More")
		}
	}
	if total != 5 {
		t.Fatalf("swept %d certificates, want 5", total)
	}
	if list, err := s.ListCertificates(ctx, store.ListOptions{}); err != nil || len(list) != 0 {
		t.Fatalf("ListCertificates after sweeping = %d, %v", len(list), err)
	}
}

func logSize(t *testing.T, s store.Store) uint64 {
	t.Helper()
	st, err := s.LogState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
