package storetest

// Retries and lineage (SPEC.md, "Retries and lineage"): renewals checked
// in the issuing transaction, renew-once, reuse revoking the lineage,
// revocation cascading to descendants, and retried issuances.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
)

var lineageTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"RenewRevokedParent", testRenewRevokedParent},
	{"RenewOnceRetry", testRenewOnceRetry},
	{"RenewReusedRevokesLineage", testRenewReused},
	{"RevokeCascades", testRevokeCascades},
	{"RevokeLongLineage", testRevokeLongLineage},
	{"RenewRacingRevoke", testRenewRacingRevoke},
	{"SignRetry", testSignRetry},
	{"ReplayRetry", testReplayRetry},
	{"TaskEndedRead", testTaskEndedRead},
}

// keyed is a logged certificate for key (a PublicKeySHA256 value).
func keyed(t *testing.T, id, key string) (store.Certificate, *store.Issuance) {
	t.Helper()
	c, l := logged(t, id)
	c.PublicKeySHA256 = key
	return c, &store.Issuance{Certificate: c, Now: now, LogLeaf: l}
}

// renewal is an issuance renewing parent onto key.
func renewal(t *testing.T, parent *store.Certificate, key string) *store.Issuance {
	t.Helper()
	_, iss := keyed(t, parent.SPIFFEID, key)
	iss.Certificate.RenewedFrom = parent.Serial
	return iss
}

func mustIssue(t *testing.T, s store.Store, iss *store.Issuance) *store.Certificate {
	t.Helper()
	if err := s.Issue(context.Background(), iss); err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return &iss.Certificate
}

func revoked(t *testing.T, s store.Store, serial string) bool {
	t.Helper()
	c, err := s.Certificate(context.Background(), serial)
	if err != nil {
		t.Fatalf("Certificate %s: %v", serial, err)
	}
	return c.Revoked()
}

func testRenewRevokedParent(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, iss := keyed(t, "spiffe://example.org/a", "k1")
	parent := mustIssue(t, s, iss)
	// The API read the parent unrevoked; the revocation lands before
	// the renewal's transaction, which must see it.
	if _, err := s.Revoke(ctx, parent.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	ren := renewal(t, parent, "k2")
	before := logSize(t, s)
	if err := s.Issue(ctx, ren); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("renewal of a revoked certificate: err = %v, want ErrRevoked", err)
	}
	if _, err := s.Certificate(ctx, ren.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused renewal was recorded: %v", err)
	}
	if logSize(t, s) != before {
		t.Fatal("the refused renewal was logged")
	}
}

func testRenewOnceRetry(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, iss := keyed(t, "spiffe://example.org/a", "k1")
	iss.Certificate.Claims = map[string]string{"namespace": "prod"}
	parent := mustIssue(t, s, iss)
	if rec, err := s.Certificate(ctx, parent.Serial); err != nil || rec.Claims["namespace"] != "prod" || rec.PublicKeySHA256 != "k1" {
		t.Fatalf("record = %+v, %v; want its claims and key hash kept", rec, err)
	}
	child := mustIssue(t, s, renewal(t, parent, "k2"))
	// The same renewal again (a retry after a lost answer): same key,
	// a new signature and serial from the CA.
	retry := renewal(t, parent, "k2")
	err := s.Issue(ctx, retry)
	var prev *store.AlreadyIssuedError
	if !errors.As(err, &prev) || !errors.Is(err, store.ErrAlreadyIssued) {
		t.Fatalf("retried renewal: err = %v, want an AlreadyIssuedError", err)
	}
	if prev.Certificate.Serial != child.Serial || prev.Certificate.LogIndex != child.LogIndex || !prev.Certificate.Logged() ||
		string(prev.Certificate.DER) != string(child.DER) {
		t.Fatalf("retried renewal got %+v, want the child %s (log index %d)", prev.Certificate, child.Serial, child.LogIndex)
	}
	if _, err := s.Certificate(ctx, retry.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the retry recorded a second child: %v", err)
	}
	if revoked(t, s, parent.Serial) || revoked(t, s, child.Serial) {
		t.Fatal("a retry revoked the lineage")
	}
	// The child renews in turn (a lineage, not a fork).
	mustIssue(t, s, renewal(t, child, "k3"))
}

func testRenewReused(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, iss := keyed(t, "spiffe://example.org/a", "k0")
	grand := mustIssue(t, s, iss)
	parent := mustIssue(t, s, renewal(t, grand, "k1"))
	child := mustIssue(t, s, renewal(t, parent, "k2"))
	next := mustIssue(t, s, renewal(t, child, "k3"))
	// A copy of parent's files renews onto another key: theft.
	thief := renewal(t, parent, "k-thief")
	err := s.Issue(ctx, thief)
	var re *store.RenewalReusedError
	if !errors.As(err, &re) || !errors.Is(err, store.ErrRenewalReused) || re.Err != nil {
		t.Fatalf("second renewal onto another key: err = %v, want a RenewalReusedError", err)
	}
	if _, err := s.Certificate(ctx, thief.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the reused renewal was recorded: %v", err)
	}
	got := map[string]bool{}
	for _, c := range re.Revoked {
		got[c.Serial] = true
	}
	for _, c := range []*store.Certificate{grand, parent, child, next} {
		rec, err := s.Certificate(ctx, c.Serial)
		if err != nil || !rec.Revoked() || rec.RevocationReason != store.KeyCompromise {
			t.Fatalf("lineage member %s after reuse: %+v, %v; want revoked keyCompromise", c.Serial, rec, err)
		}
		if !got[c.Serial] {
			t.Fatalf("RenewalReusedError.Revoked %v lacks %s", re.Revoked, c.Serial)
		}
	}
	// Even the legitimate retry is refused now.
	if err := s.Issue(ctx, renewal(t, parent, "k2")); !errors.Is(err, store.ErrRevoked) {
		t.Fatalf("retry after the lineage was revoked: err = %v, want ErrRevoked", err)
	}
}

func testRevokeCascades(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, iss := keyed(t, "spiffe://example.org/a", "k0")
	root := mustIssue(t, s, iss)
	a := mustIssue(t, s, renewal(t, root, "k1"))
	b := mustIssue(t, s, renewal(t, a, "k2"))
	c := mustIssue(t, s, renewal(t, b, "k3"))
	recs, err := s.RevokeLineage(ctx, a.Serial, 4, now, false)
	if err != nil || len(recs) != 3 || recs[0].Serial != a.Serial {
		t.Fatalf("RevokeLineage(a) = %d records, %v; want a, b, c", len(recs), err)
	}
	if revoked(t, s, root.Serial) {
		t.Fatal("revoking a certificate revoked the one it renewed")
	}
	for _, x := range []*store.Certificate{a, b, c} {
		if !revoked(t, s, x.Serial) {
			t.Fatalf("descendant %s not revoked", x.Serial)
		}
	}
	revs, err := s.Revocations(ctx, "abcd", now)
	if err != nil || len(revs) != 3 {
		t.Fatalf("Revocations = %d, %v; want 3 (the CRL lists the descendants)", len(revs), err)
	}
	// Revoke (the plain form) cascades too.
	_, iss2 := keyed(t, "spiffe://example.org/b", "j0")
	p := mustIssue(t, s, iss2)
	q := mustIssue(t, s, renewal(t, p, "j1"))
	if _, err := s.Revoke(ctx, p.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	if !revoked(t, s, q.Serial) {
		t.Fatal("Revoke did not revoke the certificate renewed from it")
	}
}

// testRenewRacingRevoke: renewals racing the revocation of their parent
// are either recorded before it (and revoked with it) or refused; no
// unrevoked child is ever left.
func testRenewRacingRevoke(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 32
	parents := make([]*store.Certificate, n)
	for i := range parents {
		_, iss := keyed(t, fmt.Sprintf("spiffe://example.org/r%d", i), "p")
		parents[i] = mustIssue(t, s, iss)
	}
	var wg sync.WaitGroup
	children := make([]string, n)
	for i := range n {
		wg.Go(func() {
			ren := renewal(t, parents[i], "c")
			if err := s.Issue(ctx, ren); err == nil {
				children[i] = ren.Certificate.Serial
			} else if !errors.Is(err, store.ErrRevoked) {
				t.Errorf("renewal %d: %v", i, err)
			}
		})
		wg.Go(func() {
			if _, err := s.Revoke(ctx, parents[i].Serial, 1, now); err != nil {
				t.Errorf("revoke %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i, c := range children {
		if c != "" && !revoked(t, s, c) {
			t.Fatalf("renewal %d was recorded after its parent's revocation (%s unrevoked)", i, c)
		}
	}
}

func testSignRetry(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/a"
	tok := newToken(t, s, id, 10*60e9)
	_, iss := keyed(t, id, "k1")
	iss.JoinToken = tok
	first := mustIssue(t, s, iss)
	// A retry with the same token and key: the certificate issued.
	_, again := keyed(t, id, "k1")
	again.JoinToken = tok
	err := s.Issue(ctx, again)
	var prev *store.AlreadyIssuedError
	if !errors.As(err, &prev) || prev.Certificate.Serial != first.Serial || prev.Certificate.LogIndex != first.LogIndex {
		t.Fatalf("retry with the same key: err = %v, want the certificate %s", err, first.Serial)
	}
	if _, err := s.Certificate(ctx, again.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("the retry recorded a second certificate")
	}
	// Another key: refused, as any second use.
	_, other := keyed(t, id, "k2")
	other.JoinToken = tok
	if err := s.Issue(ctx, other); !errors.Is(err, store.ErrTokenInvalid) || errors.Is(err, store.ErrAlreadyIssued) {
		t.Fatalf("retry with another key: err = %v, want ErrTokenInvalid", err)
	}
	// Once the certificate is revoked, the retry gets nothing.
	if _, err := s.Revoke(ctx, first.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	_, late := keyed(t, id, "k1")
	late.JoinToken = tok
	if err := s.Issue(ctx, late); !errors.Is(err, store.ErrTokenInvalid) {
		t.Fatalf("retry after revocation: err = %v, want ErrTokenInvalid", err)
	}
}

func testReplayRetry(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := "spiffe://example.org/vm"
	_, iss := keyed(t, id, "k1")
	iss.Once = []string{"jti:1", "instance:1"}
	first := mustIssue(t, s, iss)
	_, again := keyed(t, id, "k1")
	again.Once = []string{"jti:1", "instance:1"}
	var prev *store.AlreadyIssuedError
	if err := s.Issue(ctx, again); !errors.As(err, &prev) || prev.Certificate.Serial != first.Serial {
		t.Fatalf("retry with the same replay keys and key: err = %v, want the certificate %s", err, first.Serial)
	}
	_, other := keyed(t, id, "k2")
	other.Once = []string{"jti:1", "instance:1"}
	if err := s.Issue(ctx, other); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("replay with another key: err = %v, want ErrReplay", err)
	}
	// One key spent by another certificate: no retry.
	_, mixed := keyed(t, id, "k1")
	mixed.Once = []string{"jti:2", "instance:1"}
	if err := s.Issue(ctx, mixed); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("a new jti with a spent instance: err = %v, want ErrReplay", err)
	}
}

func testTaskEndedRead(t *testing.T, s store.Store) {
	ctx := context.Background()
	if ended, err := s.TaskEnded(ctx, "job-1"); err != nil || ended {
		t.Fatalf("TaskEnded before the end = %v, %v", ended, err)
	}
	if err := s.EndTask(ctx, "job-1", now); err != nil {
		t.Fatal(err)
	}
	if ended, err := s.TaskEnded(ctx, "job-1"); err != nil || !ended {
		t.Fatalf("TaskEnded after the end = %v, %v", ended, err)
	}
}

// testRevokeLongLineage: revoking an old certificate walks through its
// expired descendants (more than etcd's default --max-txn-ops) and
// revokes the live ones at the end of the chain.
func testRevokeLongLineage(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 150
	var chain []*store.Certificate
	for i := range n {
		var iss *store.Issuance
		if i == 0 {
			_, iss = keyed(t, "spiffe://example.org/long", "k0")
		} else {
			iss = renewal(t, chain[i-1], fmt.Sprintf("k%d", i))
		}
		if i < n-2 {
			// Issued and expired long ago.
			iss.Certificate.NotBefore = now.Add(-time.Duration(n-i) * time.Hour)
			iss.Certificate.NotAfter = iss.Certificate.NotBefore.Add(time.Hour)
		}
		chain = append(chain, mustIssue(t, s, iss))
	}
	recs, err := s.RevokeLineage(ctx, chain[0].Serial, 1, now, false)
	if err != nil || len(recs) != 3 || recs[0].Serial != chain[0].Serial {
		t.Fatalf("RevokeLineage of the first of %d = %d records, %v; want it and the 2 live ones", n, len(recs), err)
	}
	for _, c := range chain[n-2:] {
		if !revoked(t, s, c.Serial) {
			t.Fatalf("live descendant %s not revoked", c.Serial)
		}
	}
	if revoked(t, s, chain[n/2].Serial) {
		t.Fatal("an expired descendant was revoked (it needs no CRL entry)")
	}
}
