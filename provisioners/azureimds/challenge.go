package azureimds

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// ErrTooManyChallenges was returned by Challenge when MaxChallenges nonces
// were outstanding. Challenge no longer refuses (the oldest outstanding
// nonce makes room); the error stays for callers that test for it.
var ErrTooManyChallenges = errors.New("azureimds: too many outstanding challenges")

// DefaultMaxChallenges bounds the outstanding nonces of one provisioner.
// When the bound is reached, a new challenge evicts the oldest outstanding
// nonce: anonymous callers asking for challenges can never make the CA
// refuse one (which once kept every VM from enrolling until the flood's
// nonces expired). An agent's nonce is lost only if MaxChallenges newer
// ones were issued between its challenge and its attestation (100,000
// within the second or so an agent needs), and the agent then asks again.
const DefaultMaxChallenges = 100_000

// NonceDigits is the length of a nonce. Azure documents the attested-data
// nonce as "an optional 10-digit string"; a nonce is freshness, not a
// secret, and a document must also have been created after its nonce was
// issued, so 10 random digits suffice.
const NonceDigits = 10

// challenge is an outstanding nonce.
type challenge struct {
	issued, expires time.Time
}

// challenges are the outstanding nonces of one provisioner, in memory.
// Each is consumed by the first attestation that presents it; a restart
// forgets them all, which only makes agents ask again.
type challenges struct {
	mu        sync.Mutex
	pending   map[string]challenge
	order     []string // nonces in issue order, oldest first; some may be gone from pending
	max       int
	ttl       time.Duration
	lastSweep time.Time
	// Evicted counts the nonces dropped unused to make room.
	evicted int
}

var nonceSpace = big.NewInt(10_000_000_000) // 10^NonceDigits

// issue returns a new nonce, unique among the outstanding ones.
func (c *challenges) issue(now time.Time) (string, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Sweeping is O(outstanding): once per TTL, never per call (a full
	// table evicts its oldest nonce below instead).
	if now.Sub(c.lastSweep) >= c.ttl {
		c.sweep(now)
	}
	for len(c.pending) >= c.max && len(c.order) > 0 {
		oldest := c.order[0]
		c.order = c.order[1:]
		if _, ok := c.pending[oldest]; ok {
			delete(c.pending, oldest)
			c.evicted++
		}
	}
	if len(c.order) > 2*c.max {
		c.compact()
	}
	for {
		n, err := rand.Int(rand.Reader, nonceSpace)
		if err != nil {
			return "", time.Time{}, fmt.Errorf("azureimds: %w", err)
		}
		nonce := fmt.Sprintf("%0*d", NonceDigits, n)
		if _, dup := c.pending[nonce]; dup {
			continue
		}
		exp := now.Add(c.ttl)
		c.pending[nonce] = challenge{issued: now, expires: exp}
		c.order = append(c.order, nonce)
		return nonce, exp, nil
	}
}

// sweep drops expired nonces. The caller holds mu.
func (c *challenges) sweep(now time.Time) {
	for n, ch := range c.pending {
		if !now.Before(ch.expires) {
			delete(c.pending, n)
		}
	}
	c.lastSweep = now
	c.compact()
}

// compact drops from order the nonces no longer pending. The caller holds
// mu.
func (c *challenges) compact() {
	kept := make([]string, 0, len(c.pending))
	for _, n := range c.order {
		if _, ok := c.pending[n]; ok {
			kept = append(kept, n)
		}
	}
	c.order = kept
}

// errNonce says why a nonce is not accepted.
var (
	errNonceUnknown = errors.New("nonce was not issued by this provisioner, or was already used")
	errNonceExpired = errors.New("nonce expired")
)

// peek returns the outstanding challenge of nonce without consuming it.
func (c *challenges) peek(nonce string, now time.Time) (challenge, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.pending[nonce]
	if !ok {
		return challenge{}, errNonceUnknown
	}
	if !now.Before(ch.expires) {
		delete(c.pending, nonce)
		return challenge{}, errNonceExpired
	}
	return ch, nil
}

// consume removes nonce; of concurrent attestations presenting the same
// nonce, exactly one succeeds.
func (c *challenges) consume(nonce string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.pending[nonce]
	if !ok {
		return errNonceUnknown
	}
	delete(c.pending, nonce)
	if !now.Before(ch.expires) {
		return errNonceExpired
	}
	return nil
}
