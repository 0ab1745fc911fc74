package anchors

import (
	"errors"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
)

// TestCheckJWTRetire: a retiring anchor's JWT key stays until
// jwt_svid.max_ttl after its successor's activation; force, a staged
// anchor and an anchor without a JWT key are not held back.
func TestCheckJWTRetire(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	set := &store.AnchorSet{Anchors: []store.Anchor{
		{ID: "old", State: store.AnchorRetiring, JWTKey: "keys/jwt.key", RetiringAt: at},
		{ID: "nokey", State: store.AnchorRetiring, RetiringAt: at},
		{ID: "staged", State: store.AnchorStaged, JWTKey: "k"},
	}}
	if err := checkJWTRetire(set, "old", at.Add(time.Hour+time.Second), time.Hour, false); !errors.Is(err, ca.ErrAnchorUnsafe) {
		t.Errorf("1h1s after activation with max_ttl 1h (another replica may have signed 2s late): want ErrAnchorUnsafe, got %v", err)
	}
	for _, c := range []struct {
		id    string
		now   time.Time
		force bool
	}{
		{"old", at.Add(time.Hour + jwtRetireMargin), false},
		{"old", at.Add(time.Minute), true},
		{"nokey", at, false},
		{"staged", at, false},
	} {
		if err := checkJWTRetire(set, c.id, c.now, time.Hour, c.force); err != nil {
			t.Errorf("%s at +%s force %v: %v", c.id, c.now.Sub(at), c.force, err)
		}
	}
}
