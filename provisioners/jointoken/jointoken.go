// Package jointoken is the join-token provisioner: an operator creates a
// single-use token bound to a SPIFFE ID, and an agent exchanges it once for
// a certificate naming that ID.
//
// A token is 256 random bits, shown once in base64url. Only its SHA-256 is
// stored. Attest looks the token up by hash and compares in constant time;
// the single use is enforced by the store, which consumes the token in the
// same transaction that records the certificate.
package jointoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/store"
)

// Prefix starts every join token, so that secret scanners and people can
// recognise one.
const Prefix = "agentca-jt-"

// TokenStore is what the provisioner needs from the store.
type TokenStore interface {
	JoinToken(ctx context.Context, hash []byte) (*store.JoinToken, error)
	CreateJoinTokens(ctx context.Context, tokens []store.JoinToken) error
}

// Provisioner is a join-token provisioner.
type Provisioner struct {
	name  string
	store TokenStore
	ttl   time.Duration
	now   func() time.Time
}

var _ provisioners.Provisioner = (*Provisioner)(nil)

// New returns the provisioner called name. ttl is how long new tokens stay
// usable (zero means 15 minutes); now nil means time.Now.
func New(name string, s TokenStore, ttl time.Duration, now func() time.Time) (*Provisioner, error) {
	if name == "" || s == nil {
		return nil, errors.New("jointoken: name and store are required")
	}
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Provisioner{name: name, store: s, ttl: ttl, now: now}, nil
}

// Hash returns the stored form of a token.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Created is a new token; Token is its only plaintext copy.
type Created struct {
	Token     string
	SPIFFEID  string
	ExpiresAt time.Time
}

// Create makes count tokens bound to spiffeID (the caller has validated
// it), valid for ttl (zero means the provisioner's default), and stores
// their hashes in one transaction.
func (p *Provisioner) Create(ctx context.Context, spiffeID string, ttl time.Duration, count int) ([]Created, error) {
	if ttl <= 0 {
		ttl = p.ttl
	}
	if count <= 0 {
		count = 1
	}
	now := p.now().UTC()
	out := make([]Created, count)
	recs := make([]store.JoinToken, count)
	for i := range out {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, fmt.Errorf("jointoken: %w", err)
		}
		tok := Prefix + base64.RawURLEncoding.EncodeToString(raw)
		out[i] = Created{Token: tok, SPIFFEID: spiffeID, ExpiresAt: now.Add(ttl)}
		recs[i] = store.JoinToken{Hash: Hash(tok), SPIFFEID: spiffeID, Provisioner: p.name, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	}
	if err := p.store.CreateJoinTokens(ctx, recs); err != nil {
		return nil, err
	}
	return out, nil
}

// Attest implements provisioners.Provisioner. It accepts a token that
// exists, belongs to this provisioner and is unexpired, or was used (for
// a retry, which the store answers with the certificate already issued
// only for the same key); the store checks use and expiry again when it
// consumes the token.
func (p *Provisioner) Attest(ctx context.Context, token string) (*provisioners.Identity, error) {
	if len(token) != len(Prefix)+43 {
		return nil, fmt.Errorf("%w: malformed join token", provisioners.ErrUnauthorized)
	}
	h := Hash(token)
	rec, err := p.store.JoinToken(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown join token", provisioners.ErrUnauthorized)
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(rec.Hash, h) != 1 {
		return nil, fmt.Errorf("%w: unknown join token", provisioners.ErrUnauthorized)
	}
	// A used token passes (its expiry no longer matters): the store
	// answers a retry with the same key with the certificate the token
	// already obtained, and refuses every other use in its transaction.
	if rec.UsedBy == "" && !rec.Usable(rec.SPIFFEID, p.name, p.now()) || rec.Provisioner != p.name {
		return nil, fmt.Errorf("%w: join token expired or of another provisioner", provisioners.ErrUnauthorized)
	}
	return &provisioners.Identity{
		SPIFFEID:  rec.SPIFFEID,
		JoinToken: h,
		Claims:    map[string]string{"spiffe_id": rec.SPIFFEID},
	}, nil
}
