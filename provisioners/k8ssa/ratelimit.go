package k8ssa

import (
	"sync"
	"time"
)

// Without the cluster's keys (TokenReview mode, no jwks_file or
// jwks_url) the CA cannot tell a forged token from a real one before it
// asks the API server, with its own credentials. The calls are bounded:
// at most ReviewRate a second on average, ReviewBurst at once; beyond,
// tokens are refused without a call (agents retry with backoff).
const (
	ReviewRate  = 20
	ReviewBurst = 40
)

// bucket is a token bucket: allow takes one token if there is one.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	rate   float64 // tokens a second
	burst  float64
	now    func() time.Time
}

func newBucket(rate, burst int, now func() time.Time) *bucket {
	if now == nil {
		now = time.Now
	}
	return &bucket{tokens: float64(burst), last: now(), rate: float64(rate), burst: float64(burst), now: now}
}

func (b *bucket) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if d := t.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = t
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
