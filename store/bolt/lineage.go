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

// txReader is store.LineageReader inside a bbolt transaction.
type txReader struct{ tx *bbolt.Tx }

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

// checkRenewal runs store.CheckRenewal in tx and returns the renewal
// record to write under the parent's key when it passes. Its refusals
// are *refusal (nothing written).
func checkRenewal(tx *bbolt.Tx, iss *store.Issuance, serial string) (key, value []byte, err error) {
	if err := store.CheckRenewal(txReader{tx}, iss); err != nil {
		if errors.Is(err, store.ErrRevoked) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrRenewalReused) ||
			store.ExistingChild(err) != "" {
			return nil, nil, refuse(err)
		}
		return nil, nil, err
	}
	if key, err = serialKey(iss.Certificate.RenewedFrom); err != nil {
		return nil, nil, err
	}
	c := iss.Certificate
	c.Serial = serial
	value, err = json.Marshal(store.NewRenewal(&c))
	return key, value, err
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
