package bolt

// Retention: the expiry indexes and Sweep.
//
//	cert_expiry   NotAfter (Unix seconds, 8 bytes BE) ‖ sequence (8 bytes BE)  → serial
//	token_expiry  ExpiresAt (Unix seconds, 8 bytes BE) ‖ sequence (8 bytes BE) → token hash
//
// The sequence is the bucket's (NextSequence), so entries of one second
// are appended in order instead of landing on random pages, as they would
// keyed by the random serial or hash.
//
// Issue and CreateJoinTokens write an entry in the same transaction as the
// record; Open builds both indexes once for a file from before them (the
// only full scan, marked done by meta "expiry_index"). Sweep walks them
// from the oldest, so it never scans the live records.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
)

var (
	bucketCertExpiry  = []byte("cert_expiry")
	bucketTokenExpiry = []byte("token_expiry")
	keyExpiryIndex    = []byte("expiry_index")
)

// expirySeconds is t in Unix seconds, clamped at zero, big-endian.
func expirySeconds(t time.Time) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, uint64(max(t.Unix(), 0)))
	return k
}

// putExpiry indexes id (a serial or token hash) as expiring at t in b.
func putExpiry(b *bbolt.Bucket, t time.Time, id []byte) error {
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	k := binary.BigEndian.AppendUint64(expirySeconds(t), seq)
	b.FillPercent = 0.9 // keys mostly grow
	return b.Put(k, id)
}

// buildExpiryIndexes indexes every certificate and join token already in
// the file; Open runs it once, when meta has no "expiry_index".
func buildExpiryIndexes(tx *bbolt.Tx) error {
	ce, te := tx.Bucket(bucketCertExpiry), tx.Bucket(bucketTokenExpiry)
	err := tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
		var c struct {
			NotAfter time.Time `json:"not_after"`
		}
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decode certificate %x: %w", k, err)
		}
		return putExpiry(ce, c.NotAfter, bytes.Clone(k))
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
		var t struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode join token %x: %w", k, err)
		}
		return putExpiry(te, t.ExpiresAt, bytes.Clone(k))
	})
}

// Sweep implements store.Store.
func (s *Store) Sweep(ctx context.Context, before time.Time, limit int) (store.Swept, error) {
	if limit <= 0 {
		limit = 1000
	}
	cut := expirySeconds(before)
	var out store.Swept
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		out = store.Swept{}
		certs, revoked := tx.Bucket(bucketCerts), tx.Bucket(bucketRevoked)
		n := 0
		// Keys are collected first: deleting under a bbolt cursor
		// makes it skip the next key.
		type entry struct{ key, id []byte }
		expired := func(b *bbolt.Bucket) []entry {
			var out []entry
			c := b.Cursor()
			for k, v := c.First(); k != nil && n < limit && bytes.Compare(k[:8], cut) < 0; k, v = c.Next() {
				out = append(out, entry{bytes.Clone(k), bytes.Clone(v)})
				n++
			}
			return out
		}
		ce := tx.Bucket(bucketCertExpiry)
		for _, e := range expired(ce) {
			serial := e.id
			if v := certs.Get(serial); v != nil {
				var c struct {
					IssuerSKI string    `json:"issuer_ski"`
					RevokedAt time.Time `json:"revoked_at"`
				}
				if err := json.Unmarshal(v, &c); err != nil {
					return fmt.Errorf("decode certificate %x: %w", serial, err)
				}
				if !c.RevokedAt.IsZero() {
					ik, err := revokedKey(c.IssuerSKI, serial)
					if err != nil {
						return err
					}
					if err := revoked.Delete(ik); err != nil {
						return err
					}
				}
				if err := certs.Delete(serial); err != nil {
					return err
				}
				if err := tx.Bucket(bucketRenewals).Delete(serial); err != nil {
					return err
				}
				out.Certificates++
			}
			if err := ce.Delete(e.key); err != nil {
				return err
			}
		}
		te, tokens := tx.Bucket(bucketTokenExpiry), tx.Bucket(bucketTokens)
		for _, e := range expired(te) {
			if tokens.Get(e.id) != nil {
				if err := tokens.Delete(e.id); err != nil {
					return err
				}
				out.JoinTokens++
			}
			if err := te.Delete(e.key); err != nil {
				return err
			}
		}
		out.More = n == limit
		return nil
	})
	return out, err
}
