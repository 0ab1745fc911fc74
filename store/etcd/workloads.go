package etcd

// Workload definitions: one JSON value, P/workloads, replaced by
// compare-and-swap on its mod revision (as the anchors are).

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/agentca/agentca/workloads"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (k keys) workloads() string { return k.p + "/workloads" }

func decodeWorkloads(kv *mvccpb.KeyValue) (*workloads.Set, error) {
	set := &workloads.Set{}
	if kv == nil {
		return set, nil
	}
	if err := json.Unmarshal(kv.Value, set); err != nil {
		return nil, fmt.Errorf("store: decode workloads: %w", err)
	}
	return set, nil
}

// Workloads implements store.Store.
func (s *Store) Workloads(ctx context.Context) (*workloads.Set, error) {
	kv, err := s.get(ctx, s.k.workloads())
	if err != nil {
		return nil, err
	}
	return decodeWorkloads(kv)
}

// UpdateWorkloads implements store.Store: fn runs on the set read, and the
// result is stored only if no one changed the set meanwhile; otherwise fn
// runs again on the new set.
func (s *Store) UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		kv, err := s.get(ctx, s.k.workloads())
		if err != nil {
			return nil, err
		}
		set, err := decodeWorkloads(kv)
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
		set.Sequence++
		v, err := json.Marshal(set)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(s.k.workloads()), "=", rev)).
			Then(clientv3.OpPut(s.k.workloads(), string(v))).Commit()
		cancel()
		if err != nil {
			return nil, s.wrap(err)
		}
		if resp.Succeeded {
			return set, nil
		}
	}
}
