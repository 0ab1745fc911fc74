package bolt

// Renewals and lineage: renewals maps a certificate's serial (key bytes)
// to its one renewal (store.Renewal, JSON). Issue checks a renewal's parent
// in its transaction (store.CheckRenewal) and records the link; Revoke
// follows the links down (and, for a reused renewal, RenewedFrom up) and
// revokes the whole lineage in one transaction.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
)

var bucketRenewals = []byte("renewals")

// txReader is store.IssueReader (and so store.LineageReader) inside a
// bbolt transaction.
type txReader struct{ tx *bbolt.Tx }

var _ store.IssueReader = txReader{}

func (r txReader) Cert(serial string) (*store.Certificate, error) {
	key, err := serialKey(serial)
	if err != nil {
		return nil, err
	}
	v := r.tx.Bucket(bucketCerts).Get(key)
	if v == nil {
		return nil, nil
	}
	var c store.Certificate
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode certificate %x: %w", key, err)
	}
	return &c, nil
}

func (r txReader) Renewal(parent string) (*store.Renewal, error) {
	key, err := serialKey(parent)
	if err != nil {
		return nil, err
	}
	v := r.tx.Bucket(bucketRenewals).Get(key)
	if v == nil {
		return nil, nil
	}
	var ren store.Renewal
	if err := json.Unmarshal(v, &ren); err != nil {
		return nil, fmt.Errorf("decode renewal %x: %w", key, err)
	}
	return &ren, nil
}

// Exists implements store.IssueReader.
func (r txReader) Exists(kind store.Record, key string) (bool, error) {
	var bucket, k []byte
	switch kind {
	case store.CertRecord:
		var err error
		if k, err = serialKey(key); err != nil {
			return false, err
		}
		bucket = bucketCerts
	case store.EndedTask:
		bucket, k = bucketTasksEnded, []byte(key)
	case store.ReplayRecord:
		bucket, k = bucketOnce, []byte(key)
	case store.LoggedLeaf:
		bucket, k = bucketLogIndex, []byte(key)
	default:
		return false, fmt.Errorf("store: unknown record kind %d", kind)
	}
	return r.tx.Bucket(bucket).Get(k) != nil, nil
}

// JoinToken implements store.IssueReader.
func (r txReader) JoinToken(hash []byte) (*store.JoinToken, error) {
	v := r.tx.Bucket(bucketTokens).Get(hash)
	if v == nil {
		return nil, nil
	}
	var tok store.JoinToken
	if err := json.Unmarshal(v, &tok); err != nil {
		return nil, fmt.Errorf("decode join token: %w", err)
	}
	return &tok, nil
}

// afterIssue turns Issue's refusals into what a retry or a reused renewal
// gets (see store.Store's Issue).
func (s *Store) afterIssue(ctx context.Context, iss *store.Issuance, err error) error {
	switch {
	case err == nil:
		return nil
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

// RevokeLineage implements store.Store.
func (s *Store) RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]store.Certificate, error) {
	if _, err := serialKey(serial); err != nil {
		return nil, err
	}
	var out []store.Certificate
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out = nil
		line, err := store.Lineage(txReader{tx}, serial, ancestors, at)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(err)
		}
		if err != nil {
			return err
		}
		for i, c := range line.Revoke {
			if c.Revoked() {
				if i == 0 {
					out = append(out, *c)
				}
				continue
			}
			if err := revokeRecord(tx, c, reason, at); err != nil {
				return err
			}
			out = append(out, *c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// revokeRecord marks c revoked in tx (and in c).
func revokeRecord(tx *bbolt.Tx, c *store.Certificate, reason int, at time.Time) error {
	key, err := serialKey(c.Serial)
	if err != nil {
		return err
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
	ik, err := revokedKey(c.IssuerSKI, key)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketCerts).Put(key, nv); err != nil {
		return err
	}
	return tx.Bucket(bucketRevoked).Put(ik, rv)
}
