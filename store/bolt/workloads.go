package bolt

// Workload definitions: one JSON value, meta "workloads", changed only
// inside a write transaction, so concurrent updates serialise.

import (
	"context"

	"github.com/agentca/agentca/workloads"
	bbolt "go.etcd.io/bbolt"
)

var keyWorkloads = []byte("workloads")

func readWorkloads(tx *bbolt.Tx) (*workloads.Set, error) {
	return readJSON[workloads.Set](tx, keyWorkloads, "workloads")
}

// Workloads implements store.Store.
func (s *Store) Workloads(ctx context.Context) (*workloads.Set, error) {
	return viewJSON[workloads.Set](s, keyWorkloads, "workloads")
}

// UpdateWorkloads implements store.Store.
func (s *Store) UpdateWorkloads(ctx context.Context, fn func(*workloads.Set) error) (*workloads.Set, error) {
	return updateJSON(ctx, s, keyWorkloads, "workloads", func(w *workloads.Set) { w.Sequence++ }, fn)
}
