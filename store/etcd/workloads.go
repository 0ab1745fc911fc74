package etcd

// Workload definitions: one JSON value, P/workloads, replaced by
// compare-and-swap on its mod revision (as the anchors are).

import (
	"context"

	"github.com/agentca/agentca/workloads"
)

func (k keys) workloads() string { return k.p + "/workloads" }

// Workloads implements store.Store.
func (s *Store) Workloads(ctx context.Context) (*workloads.Set, error) {
	return getJSON[workloads.Set](ctx, s, s.k.workloads(), "workloads")
}

// UpdateWorkloads implements store.Store: fn runs on the set read, and the
// result is stored only if no one changed the set meanwhile; otherwise fn
// runs again on the new set.
func (s *Store) UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error) {
	return updateJSON(ctx, s, s.k.workloads(), "workloads", func(w *workloads.Set) { w.Sequence++ }, fn)
}
