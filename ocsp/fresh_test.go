package ocsp_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"sync/atomic"
	"testing"

	"github.com/agentca/agentca/ocsp"
	xocsp "golang.org/x/crypto/ocsp"
)

// TestStaleResponder: a revocation the responder was never told about (a
// replica that missed it while paused) is answered as soon as the
// responder is not fresh: a cached good is not served then, the status is
// read again; a cached revoked is still served without a read; and with
// the store unreachable the answer is tryLater, never the cached good.
func TestStaleResponder(t *testing.T) {
	var fresh atomic.Bool
	fresh.Store(true)
	e := newEnv(t, envOptions{fresh: fresh.Load})
	ctx := context.Background()
	leaf, other := e.issue(0), e.issue(0)
	req, otherReq := e.request(leaf, 0), e.request(other, 0)
	if _, parsed := e.respond(req, leaf); parsed.Status != xocsp.Good {
		t.Fatalf("status %d, want good", parsed.Status)
	}
	e.respond(otherReq, other)
	// Revoked in the store, behind the responder's back.
	if _, err := e.bolt.Revoke(ctx, hex.EncodeToString(leaf.SerialNumber.Bytes()), xocsp.KeyCompromise, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, parsed := e.respond(req, leaf); parsed.Status != xocsp.Good {
		t.Fatalf("fresh: status %d, want the cached good (the responder trusts its notifications)", parsed.Status)
	}
	fresh.Store(false)
	if _, parsed := e.respond(req, leaf); parsed.Status != xocsp.Revoked {
		t.Fatalf("stale: status %d, want revoked read from the store", parsed.Status)
	}
	reads := e.store.reads.Load()
	if _, parsed := e.respond(req, leaf); parsed.Status != xocsp.Revoked || e.store.reads.Load() != reads {
		t.Fatalf("stale: a cached revoked answer was not served from the cache (status %d, %d reads)", parsed.Status, e.store.reads.Load()-reads)
	}
	// The store cannot be read: tryLater for the good one, the revoked
	// one still from the cache.
	e.store.down.Store(true)
	if _, body, _ := e.responder.Respond(ctx, otherReq); !bytes.Equal(body, ocsp.TryLaterResponse) {
		t.Fatalf("stale and store down: %x, want tryLater", body)
	}
	if _, parsed := e.respond(req, leaf); parsed.Status != xocsp.Revoked {
		t.Fatalf("stale and store down: revoked certificate answered %d", parsed.Status)
	}
	// Fresh again: the cache serves.
	fresh.Store(true)
	if _, parsed := e.respond(otherReq, other); parsed.Status != xocsp.Good {
		t.Fatalf("fresh again: status %d, want the cached good", parsed.Status)
	}
}
