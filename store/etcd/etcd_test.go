package etcd_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/store/storetest"
)

// TestConformance runs the store suite against a single-member etcd, each
// test under a prefix of its own.
func TestConformance(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(),
			Prefix: fmt.Sprintf("/conformance%d", n.Add(1)), MaxTxnOps: 1024})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestConformanceDefaultTxnOps runs the suite on a member with etcd's
// default --max-txn-ops (128) and the store's default MaxTxnOps, so that
// batches are split and the too-many-operations fallback runs.
func TestConformanceDefaultTxnOps(t *testing.T) {
	cluster := etcdtest.NewWith(t, 1, etcdtest.Options{MaxTxnOps: etcd.DefaultMaxTxnOps})
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(),
			Prefix: fmt.Sprintf("/conformance%d", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
