package storetest

// Issue's checks in their order (store.CheckIssue): an issuance that fails
// several is refused with the first, and writes nothing.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
)

var checkTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"CheckOrder", testCheckOrder},
}

func testCheckOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	const id = "spiffe://example.org/a"
	// What the refused issuances run into: a recorded serial and leaf,
	// an ended task, a used join token, a used replay key, a revoked
	// parent.
	first, leaf := logged(t, id)
	used := newToken(t, s, id, time.Hour)
	mustIssue(t, s, &store.Issuance{Certificate: first, JoinToken: used, Once: []string{"used-key"}, Now: now, LogLeaf: leaf})
	if err := s.EndTask(ctx, "ended", now); err != nil {
		t.Fatal(err)
	}
	parent, _ := keyed(t, id, "k1")
	mustIssue(t, s, &store.Issuance{Certificate: parent, Now: now})
	if _, err := s.Revoke(ctx, parent.Serial, 1, now); err != nil {
		t.Fatal(err)
	}
	fresh := newToken(t, s, id, time.Hour)

	// Each step clears the refusal of the one before.
	iss := &store.Issuance{Certificate: first, JoinToken: used, Once: []string{"used-key"}, Now: now, LogLeaf: leaf}
	iss.Certificate.Task = "ended"
	iss.Certificate.RenewedFrom = parent.Serial
	for _, step := range []struct {
		want error
		next func()
	}{
		{store.ErrDuplicateSerial, func() { iss.Certificate.Serial = randSerial(t) }},
		{store.ErrTaskEnded, func() { iss.Certificate.Task = "" }},
		{store.ErrTokenInvalid, func() { iss.JoinToken = fresh }},
		{store.ErrReplay, func() { iss.Once = []string{"new-key", "new-key"} }},
		{store.ErrReplay, func() { iss.Once = []string{"new-key"} }},
		{store.ErrRevoked, func() { iss.Certificate.RenewedFrom = "" }},
		{store.ErrDuplicateSerial, nil},
	} {
		err := s.Issue(ctx, iss)
		if !errors.Is(err, step.want) {
			t.Fatalf("Issue of %+v: err = %v, want %v", iss, err, step.want)
		}
		if step.next == nil {
			if !strings.Contains(err.Error(), "log already holds") {
				t.Fatalf("last refusal %q, want the log's", err)
			}
			break
		}
		step.next()
	}
	// Nothing was written by the refusals.
	if tok, err := s.JoinToken(ctx, fresh); err != nil || tok.UsedBy != "" {
		t.Fatalf("the fresh token after refusals: %+v, %v; want unused", tok, err)
	}
	if _, err := s.ReplayKey(ctx, "new-key"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("replay key after refusals: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Certificate(ctx, iss.Certificate.Serial); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused serial recorded: err = %v", err)
	}
}
