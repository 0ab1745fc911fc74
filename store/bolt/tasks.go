package bolt

// Ended tasks: tasks_ended maps a task to the time it ended (RFC 3339).
// Issue refuses a certificate naming one, in its transaction.

import (
	"context"
	"errors"
	"time"

	bbolt "go.etcd.io/bbolt"
)

var bucketTasksEnded = []byte("tasks_ended")

// EndTask implements store.Store.
func (s *Store) EndTask(ctx context.Context, task string, at time.Time) error {
	if task == "" {
		return errors.New("store: empty task")
	}
	return wrap(s.write(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTasksEnded)
		if b.Get([]byte(task)) != nil {
			return nil
		}
		return b.Put([]byte(task), []byte(at.UTC().Format(time.RFC3339Nano)))
	}))
}

// TaskEnded implements store.Store.
func (s *Store) TaskEnded(ctx context.Context, task string) (bool, error) {
	var ended bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		ended = tx.Bucket(bucketTasksEnded).Get([]byte(task)) != nil
		return nil
	})
	return ended, wrap(err)
}
