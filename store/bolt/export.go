package bolt

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentca/agentca/store"
	ct "github.com/google/certificate-transparency-go"
	bbolt "go.etcd.io/bbolt"
)

var _ store.Exporter = (*Store)(nil)

var errOldFile = errors.New("this bbolt file was written by an older agentca: run agentca serve once with this version (it upgrades the file as it starts), stop it, then export it")

// Export implements store.Exporter from one read transaction (it works
// on a store opened read-only).
func (s *Store) Export(ctx context.Context, fn func(store.Item) error) error {
	return wrap(s.view(func(tx *bbolt.Tx) error {
		// A file an older agentca wrote lacks buckets and the indexes
		// a read-write Open adds (the issuance log, the expiry
		// indexes): it is upgraded by opening it once, not here.
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return errOldFile
			}
		}
		if meta := tx.Bucket(bucketMeta); meta.Get(keyLogState) == nil || meta.Get(keyExpiryIndex) == nil {
			return errOldFile
		}
		each := func(bucket []byte, f func(k, v []byte) error) error {
			c := tx.Bucket(bucket).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := f(k, v); err != nil {
					return err
				}
			}
			return nil
		}
		if err := each(bucketCerts, func(k, v []byte) error {
			c := new(store.Certificate)
			if err := json.Unmarshal(v, c); err != nil {
				return fmt.Errorf("store: decode certificate %x: %w", k, err)
			}
			return fn(store.Item{Certificate: c})
		}); err != nil {
			return err
		}
		if err := each(bucketTokens, func(k, v []byte) error {
			t := new(store.JoinToken)
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("store: decode join token %x: %w", k, err)
			}
			return fn(store.Item{JoinToken: t})
		}); err != nil {
			return err
		}
		if err := each(bucketOnce, func(k, v []byte) error {
			return fn(store.Item{ReplayKey: string(k), ReplaySerial: hex.EncodeToString(v)})
		}); err != nil {
			return err
		}
		if err := each(bucketTasksEnded, func(k, v []byte) error {
			at, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return fmt.Errorf("store: end of task %q: %w", k, err)
			}
			return fn(store.Item{Task: string(k), TaskEndedAt: at})
		}); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyAnchors); v != nil {
			set := new(store.AnchorSet)
			if err := json.Unmarshal(v, set); err != nil {
				return fmt.Errorf("store: decode anchors: %w", err)
			}
			if err := fn(store.Item{Anchors: set}); err != nil {
				return err
			}
		}
		if meta.Get(keyWorkloads) != nil {
			set, err := readWorkloads(tx)
			if err != nil {
				return fmt.Errorf("store: %w", err)
			}
			if err := fn(store.Item{Workloads: set}); err != nil {
				return err
			}
		}
		var next uint64
		if err := each(bucketLogEntries, func(k, v []byte) error {
			if !bytes.Equal(k, indexKey(next)) {
				return fmt.Errorf("store: log entry %d is missing (found key %x)", next, k)
			}
			next++
			return fn(store.Item{LogEntry: bytes.Clone(v)})
		}); err != nil {
			return err
		}
		if v := meta.Get(keyLogSTH); v != nil {
			sth := new(ct.SignedTreeHead)
			if err := json.Unmarshal(v, sth); err != nil {
				return fmt.Errorf("store: decode signed tree head: %w", err)
			}
			return fn(store.Item{TreeHead: sth})
		}
		return nil
	}))
}
