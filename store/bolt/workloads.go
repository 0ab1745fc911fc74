package bolt

// Workload definitions: one JSON value, meta "workloads", changed only
// inside a write transaction, so concurrent updates serialise.

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/agentca/agentca/workloads"
	bbolt "go.etcd.io/bbolt"
)

var keyWorkloads = []byte("workloads")

func readWorkloads(tx *bbolt.Tx) (*workloads.Set, error) {
	set := &workloads.Set{}
	v := tx.Bucket(bucketMeta).Get(keyWorkloads)
	if v == nil {
		return set, nil
	}
	if err := json.Unmarshal(v, set); err != nil {
		return nil, fmt.Errorf("decode workloads: %w", err)
	}
	return set, nil
}

// Workloads implements store.Store.
func (s *Store) Workloads(ctx context.Context) (*workloads.Set, error) {
	var set *workloads.Set
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		set, err = readWorkloads(tx)
		return err
	})
	return set, wrap(err)
}

// UpdateWorkloads implements store.Store.
func (s *Store) UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error) {
	var out *workloads.Set
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		set, err := readWorkloads(tx)
		if err != nil {
			return err
		}
		if err := fn(set); err != nil {
			return refuse(err)
		}
		set.Sequence++
		v, err := json.Marshal(set)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyWorkloads, v); err != nil {
			return err
		}
		out = set
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}
