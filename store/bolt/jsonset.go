package bolt

// Sets kept as one JSON value in the meta bucket (the trust anchors, the
// workload definitions), changed only inside a write transaction, so
// concurrent updates serialise; each change bumps the set's sequence.

import (
	"context"
	"encoding/json"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// readJSON decodes the meta value at key into a new T; a zero T when
// there is none. what names it in errors.
func readJSON[T any](tx *bbolt.Tx, key []byte, what string) (*T, error) {
	set := new(T)
	v := tx.Bucket(bucketMeta).Get(key)
	if v == nil {
		return set, nil
	}
	if err := json.Unmarshal(v, set); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return set, nil
}

// viewJSON reads the set at key.
func viewJSON[T any](s *Store, key []byte, what string) (*T, error) {
	var set *T
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		set, err = readJSON[T](tx, key, what)
		return err
	})
	return set, wrap(err)
}

// updateJSON runs fn on the set at key and stores the result with bump
// applied (the sequence), in one write transaction; fn's error is a
// refusal and changes nothing.
func updateJSON[T any](ctx context.Context, s *Store, key []byte, what string, bump func(*T), fn func(*T) error) (*T, error) {
	var out *T
	err := s.write(ctx, func(tx *bbolt.Tx) error {
		set, err := readJSON[T](tx, key, what)
		if err != nil {
			return err
		}
		if err := fn(set); err != nil {
			return refuse(err)
		}
		bump(set)
		v, err := json.Marshal(set)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(key, v); err != nil {
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
