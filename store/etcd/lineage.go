package etcd

// Renewals and lineage: P/renewed/<serial> → the certificate's one
// renewal (store.Renewal, JSON). Issue reads (and so compares) the
// parent's record and renewal key, so a renewal racing a revocation or
// another renewal of the same parent either commits before it or is
// decided again after it. A revocation reads its lineage first, then
// revokes it in one transaction comparing every key the walk read: a
// renewal added meanwhile fails the compare, and the walk is made again.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
)

func (k keys) renewal(serial string) string { return k.p + "/renewed/" + serial }

// errMoreKeys: the lineage walk inside the transaction reached a key the
// walk before it had not read (the lineage grew meanwhile).
var errMoreKeys = errors.New("store: etcd: the lineage changed; reading it again")

// batchReader is store.LineageReader over a batch: only the keys the op
// declared can be read; another is noted in missing.
type batchReader struct {
	b       *batch
	missing *[]string
}

func (r batchReader) read(key string, v any) (bool, error) {
	raw, ok, err := r.b.get(key)
	if errors.Is(err, errNotRead) && r.missing != nil {
		*r.missing = append(*r.missing, key)
		return false, errMoreKeys
	}
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

func (r batchReader) Cert(serial string) (*store.Certificate, error) {
	var c store.Certificate
	ok, err := r.read(r.b.s.k.cert(serial), &c)
	if !ok {
		return nil, err
	}
	return &c, nil
}

func (r batchReader) Renewal(parent string) (*store.Renewal, error) {
	var ren store.Renewal
	ok, err := r.read(r.b.s.k.renewal(parent), &ren)
	if !ok {
		return nil, err
	}
	return &ren, nil
}

// getReader is store.LineageReader over linearizable reads, noting every
// key it read: the walk made before the revoking transaction.
type getReader struct {
	s    *Store
	ctx  context.Context
	keys []string
}

func (r *getReader) read(key string, v any) (bool, error) {
	r.keys = append(r.keys, key)
	kv, err := r.s.get(r.ctx, key)
	if err != nil || kv == nil {
		return false, err
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return false, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return true, nil
}

func (r *getReader) Cert(serial string) (*store.Certificate, error) {
	var c store.Certificate
	ok, err := r.read(r.s.k.cert(serial), &c)
	if !ok {
		return nil, err
	}
	return &c, nil
}

func (r *getReader) Renewal(parent string) (*store.Renewal, error) {
	var ren store.Renewal
	ok, err := r.read(r.s.k.renewal(parent), &ren)
	if !ok {
		return nil, err
	}
	return &ren, nil
}

// checkRenewal runs store.CheckRenewal on the batch and returns the
// renewal record to write under the parent's key when it passes.
func checkRenewal(b *batch, iss *store.Issuance, serial string) ([]byte, error) {
	if err := store.CheckRenewal(batchReader{b: b}, iss); err != nil {
		if errors.Is(err, store.ErrRevoked) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrRenewalReused) ||
			store.ExistingChild(err) != "" {
			return nil, refuse(err)
		}
		return nil, err
	}
	c := iss.Certificate
	c.Serial = serial
	return json.Marshal(store.NewRenewal(&c))
}

// afterIssue turns Issue's refusals into what a retry or a reused renewal
// gets (see store.Store's Issue).
func (s *Store) afterIssue(ctx context.Context, iss *store.Issuance, err error) error {
	switch {
	case store.ExistingChild(err) != "":
		return store.FindRenewed(ctx, s, iss, store.ExistingChild(err))
	case errors.Is(err, store.ErrRenewalReused):
		parent := iss.Certificate.RenewedFrom
		// Detached: the theft is acted on even if the caller hung up.
		recs, rerr := s.RevokeLineage(context.WithoutCancel(ctx), parent, store.KeyCompromise, iss.Now, true)
		return &store.RenewalReusedError{Parent: parent, Revoked: recs, Err: rerr}
	case errors.Is(err, store.ErrTokenInvalid), errors.Is(err, store.ErrReplay):
		return store.FindIssued(ctx, s, iss, err)
	}
	return err
}

// Revoke implements store.Store: serial and its descendants.
func (s *Store) Revoke(ctx context.Context, serial string, reason int, at time.Time) (*store.Certificate, error) {
	recs, err := s.RevokeLineage(ctx, serial, reason, at, false)
	if err != nil {
		return nil, err
	}
	return &recs[0], nil
}

// lineageAttempts bounds the walks of a lineage that keeps growing.
const lineageAttempts = 10

// RevokeLineage implements store.Store.
func (s *Store) RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]store.Certificate, error) {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	for range lineageAttempts {
		pre := &getReader{s: s, ctx: ctx}
		line, err := store.Lineage(pre, sn, ancestors, at)
		if err != nil {
			return nil, err
		}
		var out []store.Certificate
		var missing []string
		o := &op{keys: pre.keys, writes: 2 * len(line), bytes: 4096 * len(line)}
		o.apply = func(b *batch) error {
			out, missing = nil, nil
			line, err := store.Lineage(batchReader{b: b, missing: &missing}, sn, ancestors, at)
			switch {
			case errors.Is(err, errMoreKeys), errors.Is(err, store.ErrNotFound):
				return refuse(err)
			case err != nil:
				return err
			}
			for i, c := range line {
				if c.Revoked() {
					if i == 0 {
						out = append(out, *c)
					}
					continue
				}
				if err := s.revokeRecord(b, c, reason, at); err != nil {
					return err
				}
				out = append(out, *c)
			}
			return nil
		}
		err = s.write(ctx, o)
		if errors.Is(err, errMoreKeys) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: etcd: the lineage of %s kept changing", store.ErrUnavailable, sn)
}

// revokeRecord marks c revoked in the batch (and in c).
func (s *Store) revokeRecord(b *batch, c *store.Certificate, reason int, at time.Time) error {
	if _, err := hex.DecodeString(c.IssuerSKI); err != nil || c.IssuerSKI == "" {
		return fmt.Errorf("bad issuer SKI %q", c.IssuerSKI)
	}
	c.RevokedAt, c.RevocationReason = at.UTC(), reason
	nv, err := json.Marshal(c)
	if err != nil {
		return err
	}
	rv, err := json.Marshal(&store.Revocation{Serial: c.Serial, RevokedAt: c.RevokedAt, Reason: reason, NotAfter: c.NotAfter})
	if err != nil {
		return err
	}
	b.put(s.k.cert(c.Serial), nv)
	b.put(s.k.rev(strings.ToLower(c.IssuerSKI), c.Serial), rv)
	return nil
}
