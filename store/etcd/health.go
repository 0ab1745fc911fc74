package etcd

// Member health. The etcd client balances requests round robin over its
// endpoints and only stops using a member once gRPC's keepalive gives up
// on the connection (seconds); a member that is frozen (SIGSTOP, a VM
// pause, a disk that hangs) keeps its TCP connection open and answers
// nothing, so every request sent to it waits out its deadline. The
// checker below asks every member, on a connection of its own, a
// serializable read that needs the member to know a leader, every
// HealthInterval; a member that fails twice in a row is taken out of the
// client's endpoints (SetEndpoints) until it answers twice in a row again.
// A request already in flight on it is bounded by AttemptTimeout instead
// of RequestTimeout.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultHealthInterval is how often each member is asked.
const DefaultHealthInterval = 250 * time.Millisecond

// DefaultAttemptTimeout bounds one attempt of a request to etcd (a
// transaction, a read) when RequestTimeout is larger.
const DefaultAttemptTimeout = time.Second

// health is the checker's state.
type health struct {
	all     []string
	clients []*clientv3.Client
	// fails and oks count consecutive results per endpoint; up says
	// whether it is in the client's endpoints.
	fails, oks []int
	up         []bool
	// ok is the last round's results, under mu.
	mu   sync.Mutex
	ok   []bool
	log  *slog.Logger
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// startHealth starts the checker when the store dialled several
// endpoints itself.
func (s *Store) startHealth(opts Options) {
	if !s.ownClient || len(opts.Endpoints) < 2 {
		return
	}
	h := &health{all: opts.Endpoints, fails: make([]int, len(opts.Endpoints)), oks: make([]int, len(opts.Endpoints)),
		up: make([]bool, len(opts.Endpoints)), ok: make([]bool, len(opts.Endpoints)), log: opts.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	for i, ep := range opts.Endpoints {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: opts.TLS, Username: opts.Username,
			Password: opts.Password, Logger: zap.NewNop(), DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 2 * time.Second})
		if err != nil {
			for _, c := range h.clients {
				c.Close()
			}
			h.log.Warn("etcd member health checks are off", "err", err)
			return
		}
		h.clients = append(h.clients, cli)
		h.up[i], h.ok[i] = true, true
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	s.health = h
	h.wg.Go(func() { s.checkHealth(ctx, opts.HealthInterval) })
}

// stopHealth ends the checker and closes its connections.
func (s *Store) stopHealth() {
	h := s.health
	if h == nil {
		return
	}
	h.stop()
	h.wg.Wait()
	for _, c := range h.clients {
		c.Close()
	}
}

func (s *Store) checkHealth(ctx context.Context, interval time.Duration) {
	h := s.health
	t := time.NewTicker(interval)
	defer t.Stop()
	ok := make([]bool, len(h.all))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for i, cli := range h.clients {
			wg.Go(func() {
				// Twice the interval: a busy member is slow, not gone.
				cctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 2*interval)
				_, err := cli.Get(cctx, s.k.schema(), clientv3.WithSerializable(), clientv3.WithCountOnly())
				cancel()
				ok[i] = err == nil
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
		s.applyHealth(ok)
	}
}

// applyHealth counts one round of results and changes the client's
// endpoints when a member went down or came back.
func (s *Store) applyHealth(ok []bool) {
	h := s.health
	h.mu.Lock()
	h.ok = slices.Clone(ok)
	h.mu.Unlock()
	changed := false
	for i, good := range ok {
		if good {
			h.oks[i]++
			h.fails[i] = 0
		} else {
			h.fails[i]++
			h.oks[i] = 0
		}
		switch {
		case h.up[i] && h.fails[i] >= 2:
			h.up[i], changed = false, true
			h.log.Warn("etcd member not answering; requests go to the other members", "endpoint", h.all[i])
		case !h.up[i] && h.oks[i] >= 2:
			h.up[i], changed = true, true
			h.log.Info("etcd member answering again", "endpoint", h.all[i])
		}
	}
	if !changed {
		return
	}
	var eps []string
	for i, ep := range h.all {
		if h.up[i] {
			eps = append(eps, ep)
		}
	}
	if len(eps) == 0 {
		// None answers: no member is better than another.
		eps = slices.Clone(h.all)
	}
	s.cli.SetEndpoints(eps...)
}

// errGivenUp is the cause of an attempt given up (attemptCtx).
var errGivenUp = fmt.Errorf("etcd: attempt given up: a member is not answering (%w)", context.DeadlineExceeded)

// attemptCtx bounds one attempt of a request by the request timeout, and
// gives it up sooner, after AttemptTimeout, when the health checker knows
// of a member that is not answering: the attempt may be waiting on it, and
// the next one goes elsewhere. While every member answers, a slow attempt
// is let run (a busy cluster is slow, not gone). giveUp reports whether
// the attempt was given up; its error is then errGivenUp's.
func (s *Store) attemptCtx(ctx context.Context) (actx context.Context, done func(), givenUp func(err error) error) {
	ctx, cancelT := context.WithTimeout(ctx, s.timeout)
	actx, cancel := context.WithCancelCause(ctx)
	h := s.health
	if h == nil {
		return actx, func() { cancel(nil); cancelT() }, func(err error) error { return err }
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	check := func() {
		if h.anyDown() {
			cancel(errGivenUp)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(s.attempt / 4)
		}
	}
	mu.Lock()
	t = time.AfterFunc(s.attempt, check)
	mu.Unlock()
	done = func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
		cancel(nil)
		cancelT()
	}
	givenUp = func(err error) error {
		if err != nil && errors.Is(context.Cause(actx), errGivenUp) {
			return errGivenUp
		}
		return err
	}
	return actx, done, givenUp
}

// anyDown reports whether a member failed the last health check.
func (h *health) anyDown() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.ok, false)
}

// retryRead runs read until it answers, within ctx, giving an attempt up
// and sending it again when a member is not answering (attemptCtx): a read
// can be sent twice.
func retryRead[T any](ctx context.Context, s *Store, read func(context.Context) (T, error)) (T, error) {
	for {
		actx, done, givenUp := s.attemptCtx(ctx)
		v, err := read(actx)
		err = givenUp(err)
		done()
		if !errors.Is(err, errGivenUp) || ctx.Err() != nil {
			return v, err
		}
	}
}

// reachable reports whether etcd can be used now: a member answered the
// last health check (with a leader), or, without the checker, etcd
// answers a linearizable read within one attempt.
func (s *Store) reachable() bool {
	if h := s.health; h != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Contains(h.ok, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.attempt)
	defer cancel()
	_, err := s.cli.Get(ctx, s.k.schema(), clientv3.WithCountOnly())
	return err == nil
}

// timeLeft reports whether every op has waited less than half the request
// timeout: enough left to try its transaction again.
func (s *Store) timeLeft(ops []*op) bool {
	for _, o := range ops {
		if time.Since(o.queued) > s.timeout/2 {
			return false
		}
	}
	return true
}
