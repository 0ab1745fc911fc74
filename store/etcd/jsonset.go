package etcd

// Sets kept as one JSON value (the trust anchors, the workload
// definitions), replaced by compare-and-swap on the key's mod revision;
// each change bumps the set's sequence.

import (
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// decodeJSON decodes kv into a new T; a zero T when kv is nil. what names
// it in errors.
func decodeJSON[T any](kv *mvccpb.KeyValue, what string) (*T, error) {
	set := new(T)
	if kv == nil {
		return set, nil
	}
	if err := json.Unmarshal(kv.Value, set); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", what, err)
	}
	return set, nil
}

// getJSON reads the set at key.
func getJSON[T any](ctx context.Context, s *Store, key, what string) (*T, error) {
	kv, err := s.get(ctx, key)
	if err != nil {
		return nil, err
	}
	return decodeJSON[T](kv, what)
}

// updateJSON runs fn on the set read at key and stores the result, with
// bump applied (the sequence), only if no one changed the set meanwhile;
// otherwise fn runs again on the new set.
func updateJSON[T any](ctx context.Context, s *Store, key, what string, bump func(*T), fn func(*T) error) (*T, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		kv, err := s.get(ctx, key)
		if err != nil {
			return nil, err
		}
		set, err := decodeJSON[T](kv, what)
		if err != nil {
			return nil, err
		}
		var rev int64
		if kv != nil {
			rev = kv.ModRevision
		}
		if err := fn(set); err != nil {
			return nil, err
		}
		bump(set)
		v, err := json.Marshal(set)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(v))).Commit()
		cancel()
		if err != nil {
			return nil, s.wrap(err)
		}
		if resp.Succeeded {
			return set, nil
		}
	}
}
