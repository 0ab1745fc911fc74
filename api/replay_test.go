package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// An operator clears a trust-on-first-use entry over the admin API, and
// the instance may enroll again.
func TestAdminClearReplayKey(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	const key = "aws-iid:aws:123456789012:i-0abc"
	key2 := mustKey(t, ca.ECP256)
	if _, err := e.authority.Issue(ctx, &ca.Request{PublicKey: key2.Public(), SPIFFEID: "spiffe://example.org/aws/i-0abc",
		Provisioner: "aws", TTL: 5 * time.Minute, Once: []string{key}}); err != nil {
		t.Fatal(err)
	}
	r := e.adminPost("/admin/v1/replay-keys/clear", wire.ReplayKeyRequest{Key: key})
	if r.status != http.StatusOK {
		t.Fatalf("clear: %d %s", r.status, r.body)
	}
	var out wire.ReplayKeyResponse
	if err := json.Unmarshal(r.body, &out); err != nil || out.Key != key || out.Serial == "" {
		t.Fatalf("answer %s, %v", r.body, err)
	}
	if _, err := e.store.ReplayKey(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("key still stored: %v", err)
	}
	apiError(t, e.adminPost("/admin/v1/replay-keys/clear", wire.ReplayKeyRequest{Key: key}), http.StatusNotFound, api.CodeNotFound)
	apiError(t, e.adminPost("/admin/v1/replay-keys/clear", wire.ReplayKeyRequest{}), http.StatusBadRequest, api.CodeBadRequest)
	if !strings.Contains(e.logs.String(), `"op":"replay_key_clear"`) {
		t.Fatal("no audit line for the clear")
	}
}
