package etcd

// Ended tasks: P/taskend/<task> → the time it ended (RFC 3339). Issue
// reads (and so compares) the key of its certificate's task, so an
// issuance racing EndTask either commits before it or is refused.

import (
	"context"
	"errors"
	"time"
)

func (k keys) taskEnded(task string) string { return k.p + "/taskend/" + task }

// EndTask implements store.Store.
func (s *Store) EndTask(ctx context.Context, task string, at time.Time) error {
	if task == "" {
		return errors.New("store: empty task")
	}
	k := s.k.taskEnded(task)
	v := []byte(at.UTC().Format(time.RFC3339Nano))
	return s.write(ctx, &op{keys: []string{k}, writes: 1, bytes: len(k) + len(v), apply: func(b *batch) error {
		if _, ok, err := b.get(k); err != nil {
			return err
		} else if ok {
			return nil
		}
		b.put(k, v)
		return nil
	}})
}

// TaskEnded implements store.Store (a linearizable read: an end recorded
// by another replica is seen).
func (s *Store) TaskEnded(ctx context.Context, task string) (bool, error) {
	kv, err := s.get(ctx, s.k.taskEnded(task))
	return kv != nil, err
}
