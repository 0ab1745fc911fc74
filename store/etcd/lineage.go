package etcd

// Renewals and lineage: P/renewed/<serial> → the certificate's one
// renewal (store.Renewal, JSON). Issue reads (and so compares) the
// parent's record and renewal key, so a renewal racing a revocation or
// another renewal of the same parent either commits before it or is
// decided again after it. A revocation walks its lineage first, then
// revokes it in one transaction comparing the records it revokes and the
// last one's renewal key: a renewal added meanwhile fails the compare (or
// the check), and the walk is made again.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (k keys) renewal(serial string) string { return k.p + "/renewed/" + serial }

// errMoreKeys: the lineage grew between its walk and the transaction.
var errMoreKeys = errors.New("store: etcd: the lineage changed; reading it again")

// batchReader is store.IssueReader (and so store.LineageReader) over a
// batch: only the keys the op declared can be read, and each key read is
// compared by the batch's transaction.
type batchReader struct{ b *batch }

var _ store.IssueReader = batchReader{}

func (r batchReader) read(key string, v any) (bool, error) {
	raw, ok, err := r.b.get(key)
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

// getReader is store.LineageReader over reads out of a transaction: the
// walk made before the revoking transaction.
type getReader struct {
	s            *Store
	ctx          context.Context
	serializable bool
}

func (r *getReader) read(key string, v any) (bool, error) {
	var opts []clientv3.OpOption
	if r.serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	kv, err := r.s.get(r.ctx, key, opts...)
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

// Exists implements store.IssueReader.
func (r batchReader) Exists(kind store.Record, key string) (bool, error) {
	var k string
	switch kind {
	case store.CertRecord:
		k = r.b.s.k.cert(key)
	case store.EndedTask:
		k = r.b.s.k.taskEnded(key)
	case store.ReplayRecord:
		k = r.b.s.k.once(key)
	case store.LoggedLeaf:
		k = r.b.s.k.logHash([]byte(key))
	default:
		return false, fmt.Errorf("store: etcd: unknown record kind %d", kind)
	}
	_, ok, err := r.b.get(k)
	return ok, err
}

// JoinToken implements store.IssueReader.
func (r batchReader) JoinToken(hash []byte) (*store.JoinToken, error) {
	raw, ok, err := r.b.get(r.b.s.k.token(hash))
	if err != nil || !ok {
		return nil, err
	}
	var tok store.JoinToken
	if err := json.Unmarshal(raw, &tok); err != nil {
		return nil, fmt.Errorf("decode join token: %w", err)
	}
	return &tok, nil
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
		return store.FindIssued(ctx, linearReader{s}, iss, err)
	}
	return err
}

// linearReader is the Store with a linearizable JoinToken (Store's first
// reads the member it talks to, which may not show a use made through
// another replica yet): a retry is recognised on any replica.
type linearReader struct{ *Store }

func (r linearReader) JoinToken(ctx context.Context, hash []byte) (*store.JoinToken, error) {
	kv, err := r.get(ctx, r.k.token(hash))
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, store.ErrNotFound
	}
	var t store.JoinToken
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return nil, fmt.Errorf("store: decode join token: %w", err)
	}
	return &t, nil
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

// RevokeLineage implements store.Store. The lineage is walked first, out
// of the transaction (a renewal record, once written, never changes);
// the transaction then compares the records it revokes and the tail's
// renewal key (still absent: nothing was renewed from the lineage
// meanwhile), so only the certificates revoked count against
// --max-txn-ops, however long the lineage.
func (s *Store) RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]store.Certificate, error) {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	for attempt := range lineageAttempts {
		// The first walk may read a member that lags (the compares
		// catch it); a walk made again reads through the leader.
		pre := &getReader{s: s, ctx: ctx, serializable: attempt == 0}
		line, err := store.Lineage(pre, sn, ancestors, at)
		if errors.Is(err, store.ErrNotFound) && pre.serializable {
			continue // a member that lags may not have the record yet
		}
		if err != nil {
			return nil, err
		}
		var out []store.Certificate
		o := &op{writes: 2 * len(line.Revoke), bytes: 4096 * len(line.Revoke)}
		for _, c := range line.Revoke {
			o.keys = append(o.keys, s.k.cert(c.Serial))
		}
		if line.Tail != "" {
			o.keys = append(o.keys, s.k.renewal(line.Tail))
		}
		o.apply = func(b *batch) error {
			out = nil
			// Checks first: the tail has no renewal yet, the records
			// are as walked.
			if line.Tail != "" {
				if _, ok, err := b.get(s.k.renewal(line.Tail)); err != nil {
					return err
				} else if ok {
					return refuse(errMoreKeys)
				}
			}
			recs := make([]*store.Certificate, 0, len(line.Revoke))
			for i, c := range line.Revoke {
				var rec store.Certificate
				ok, err := batchReader{b: b}.read(s.k.cert(c.Serial), &rec)
				if err != nil {
					return err
				}
				switch {
				case !ok && i == 0:
					return refuse(store.ErrNotFound)
				case !ok:
					continue // swept meanwhile
				case rec.Revoked():
					if i == 0 {
						out = append(out, rec)
					}
					continue
				}
				recs = append(recs, &rec)
			}
			for _, c := range recs {
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

// importRenewal writes the renewal record a migrated certificate's parent
// would have (a bbolt file keeps them in its own bucket, not exported):
// renew-once and the lineage hold across a migration.
func (s *Store) importRenewal(put func(key string, v []byte) error, c *store.Certificate) error {
	if c.RenewedFrom == "" {
		return nil
	}
	parent, err := store.NormalizeSerial(c.RenewedFrom)
	if err != nil {
		return err
	}
	v, err := json.Marshal(store.NewRenewal(c))
	if err != nil {
		return err
	}
	return put(s.k.renewal(parent), v)
}
