package etcd

// SetCommitHook makes the committer call h in place of sending each write
// transaction; send sends it. nil removes the hook.
func SetCommitHook(s *Store, h func(send func() (bool, error)) (bool, error)) {
	if h == nil {
		s.commitHook.Store(nil)
		return
	}
	s.commitHook.Store(&h)
}

// Wrap is Store.wrap on a store that is not closed.
func Wrap(err error) error { return (&Store{}).wrap(err) }
