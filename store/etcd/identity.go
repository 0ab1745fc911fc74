package etcd

import (
	"context"
	"errors"
	"fmt"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (k keys) storeID() string { return k.p + "/store_id" }

// StoreID implements store.Identity: the identity under P/store_id, ""
// when there is none.
func (s *Store) StoreID(ctx context.Context) (string, error) {
	kv, err := s.get(ctx, s.k.storeID())
	if err != nil || kv == nil {
		return "", err
	}
	return string(kv.Value), nil
}

// SetStoreID implements store.Identity: it writes id under P/store_id
// when the key does not exist, and refuses any other identity.
func (s *Store) SetStoreID(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("store: empty store identity")
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if s.isClosed() {
		return store.ErrClosed
	}
	resp, err := s.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.k.storeID()), "=", 0)).
		Then(clientv3.OpPut(s.k.storeID(), id)).
		Else(clientv3.OpGet(s.k.storeID())).Commit()
	if err != nil {
		return s.wrap(err)
	}
	if !resp.Succeeded {
		if old := valueOf(resp.Responses[0].GetResponseRange().Kvs); old != id {
			return fmt.Errorf("store: etcd prefix %s already has the identity %s", s.k.p, old)
		}
	}
	return nil
}

// LogHead implements store.LogHeadReader: the log state and the saved
// tree head read in one transaction (one revision), so that a replica
// starting while others append never sees a tree head newer than the
// state it compares it with.
func (s *Store) LogHead(ctx context.Context) (translog.State, *ct.SignedTreeHead, error) {
	st, kv, err := s.readHead(ctx)
	if err != nil {
		return st, nil, err
	}
	if kv == nil {
		return st, nil, nil
	}
	sth, err := decodeSTH(kv)
	return st, sth, err
}

// checkExists refuses a prefix that holds no CA (no schema key): only
// agentca init and migrate create one (Options.MustExist).
func (s *Store) checkExists(ctx context.Context) error {
	kv, err := s.get(ctx, s.k.schema())
	if err != nil {
		return err
	}
	if kv == nil {
		return fmt.Errorf("%w: etcd prefix %s is empty: it holds no CA (was it deleted, or is this the wrong prefix or cluster?); restore it from a backup (docs/operations.md); a new store is made only by agentca init or migrate",
			store.ErrNoStore, s.k.p)
	}
	return nil
}
