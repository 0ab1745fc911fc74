package bolt

import (
	"context"
	"errors"
	"fmt"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	bbolt "go.etcd.io/bbolt"
)

// keyStoreID is the meta key of the store's identity (store.Identity).
var keyStoreID = []byte("store_id")

// StoreID implements store.Identity: the identity agentca init wrote,
// "" when none was.
func (s *Store) StoreID(ctx context.Context) (string, error) {
	var id string
	err := s.view(func(tx *bbolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			id = string(meta.Get(keyStoreID))
		}
		return nil
	})
	return id, wrap(err)
}

// SetStoreID implements store.Identity: it writes id when the store has
// no identity yet, and otherwise refuses any other one.
func (s *Store) SetStoreID(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("store: empty store identity")
	}
	return s.write(ctx, func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		switch old := string(meta.Get(keyStoreID)); old {
		case id:
			return nil
		case "":
			return meta.Put(keyStoreID, []byte(id))
		default:
			return refuse(fmt.Errorf("store: %s already has the identity %s", s.path, old))
		}
	})
}

// LogHead implements store.LogHeadReader: the log state and the saved
// tree head from one transaction.
func (s *Store) LogHead(ctx context.Context) (translog.State, *ct.SignedTreeHead, error) {
	var st translog.State
	var sth *ct.SignedTreeHead
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		if st, err = readState(tx); err != nil {
			return err
		}
		sth, err = readTreeHead(tx)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	return st, sth, wrap(err)
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }
