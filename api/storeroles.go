package api

// The store's roles in the API: each handler asks the store for what it
// does (read certificates, revoke, clear replay keys), not for the whole
// store.Store. A store.Store plays every role.

import (
	"context"
	"errors"
	"time"

	"github.com/agentca/agentca/store"
)

// CertReader reads certificate records: a renewal's parent, the admin
// list, a task's and a node's certificates, whether a task ended.
type CertReader interface {
	Certificate(ctx context.Context, serial string) (*store.Certificate, error)
	ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error)
	TaskEnded(ctx context.Context, task string) (bool, error)
}

// Revoker records revocations (with the lineage a reused renewal
// revokes) and the end of tasks.
type Revoker interface {
	Revoke(ctx context.Context, serial string, reason int, at time.Time) (*store.Certificate, error)
	RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]store.Certificate, error)
	EndTask(ctx context.Context, task string, at time.Time) error
}

// ReplayKeys reads and clears the replay keys (the admin's
// trust-on-first-use reset).
type ReplayKeys interface {
	ReplayKey(ctx context.Context, key string) (string, error)
	DeleteReplayKey(ctx context.Context, key string) error
}

// storeRoles are the roles the handlers reach through Server.store.
type storeRoles struct {
	CertReader
	Revoker
	ReplayKeys
}

// rolesOf returns opts' store roles: Revoker and ReplayKeys, when nil,
// are opts.Store's own, which must then play them (a store.Store does).
func rolesOf(opts Options) (storeRoles, error) {
	r := storeRoles{CertReader: opts.Store, Revoker: opts.Revoker, ReplayKeys: opts.ReplayKeys}
	var ok bool
	if r.Revoker == nil {
		if r.Revoker, ok = opts.Store.(Revoker); !ok {
			return r, errors.New("api: Revoker is required when Store does not revoke")
		}
	}
	if r.ReplayKeys == nil {
		if r.ReplayKeys, ok = opts.Store.(ReplayKeys); !ok {
			return r, errors.New("api: ReplayKeys is required when Store does not keep them")
		}
	}
	return r, nil
}
