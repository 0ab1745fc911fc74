package etcd

// The committer: writes queued by the record methods, gathered into
// batches and sent as one transaction each, with retries.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/agentca/agentca/store"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// op is one write for the committer. It names the keys it reads; apply
// must check before it writes: when it returns a *refusal, it must not
// have written anything.
type op struct {
	ctx  context.Context
	keys []string
	// writes bounds the puts and deletes apply makes, log nodes and
	// state excepted; leaves is how many leaves it appends (0 or 1).
	writes, leaves int
	// bytes estimates the size of what it writes.
	bytes int
	apply func(b *batch) error
	// hints, when set, are the values of keys the op expects them to
	// have (nil: absent), with their mod revisions: a batch whose ops
	// all have hints for every key is not read first (readHinted).
	hints map[string]*mvccpb.KeyValue
	// committed runs after a successful commit that applied the op
	// without refusal, before the caller is answered.
	committed func()
	done      chan error
	// queued is when write handed it to the committer.
	queued time.Time
}

// refusal marks an error that a write returned after its checks, with
// nothing written; other errors abort the whole batch.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(err error) error { return &refusal{err} }

// outcomeUnknown is the error of a write whose transaction was sent but
// whose outcome etcd did not report (a timeout, a lost connection): it may
// have been committed. It wraps the store.ErrUnavailable error; Issue reads
// the record back to find out.
type outcomeUnknown struct{ err error }

func (e *outcomeUnknown) Error() string { return e.err.Error() + "; the write may have been committed" }
func (e *outcomeUnknown) Unwrap() error { return e.err }

// MinTxnOps is the smallest --max-txn-ops (Options.MaxTxnOps) the store
// accepts: the most operations one write may need in a transaction of its
// own. An issuance writes its record, expiry entry, join token, replay
// keys, log entry and hash index, the tree nodes its leaf fixes (at most
// 64, one per level, plus the leaf's), the log state and its tree head;
// 96 leaves room for 24 replay keys.
const MinTxnOps = 96

// write hands o to the committer and waits until its transaction has
// committed (or it was refused, or failed). Once handed over, it waits
// regardless of ctx, so the caller always learns the outcome the store
// knows; the committer answers within about the request timeout (see
// commit and dropStale).
func (s *Store) write(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.ctx, o.done, o.queued = ctx, make(chan error, 1), time.Now()
	// senders lets the committer, once closed, wait for the writers
	// that passed this check before it takes the last ops (drain).
	s.senders.Add(1)
	if s.closed.Load() {
		s.senders.Add(-1)
		return store.ErrClosed
	}
	select {
	case s.ops <- o:
		s.senders.Add(-1)
	case <-ctx.Done():
		s.senders.Add(-1)
		return ctx.Err()
	case <-s.quit:
		s.senders.Add(-1)
		return store.ErrClosed
	}
	return <-o.done
}

func (s *Store) commitLoop() {
	defer close(s.done)
	var pending []*op // taken from the channel, not yet committed
	for {
		if len(pending) == 0 {
			select {
			case o := <-s.ops:
				pending = append(pending, o)
			case <-s.quit:
				// Finish what writers handed over.
				pending = s.drain(pending)
				for len(pending) > 0 {
					pending = s.commit(pending)
				}
				return
			}
		}
		if pending[0].leaves > 0 {
			s.awaitTurn()
		}
	fill:
		for len(pending) < s.maxBatch {
			select {
			case o := <-s.ops:
				pending = append(pending, o)
			default:
				break fill
			}
		}
		pending = s.commit(pending)
	}
}

// drain, once the store is closed, takes every op left in the channel.
// A writer counts itself in senders before it checks closed, so once
// senders is zero no writer can send any more.
func (s *Store) drain(pending []*op) []*op {
	for {
		select {
		case o := <-s.ops:
			pending = append(pending, o)
			continue
		default:
		}
		if s.senders.Load() == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for {
		select {
		case o := <-s.ops:
			pending = append(pending, o)
		default:
			return pending
		}
	}
}

// errNotSent is the error of the writes answered without being sent
// because etcd is unavailable.
func errNotSent(cause error) error {
	return fmt.Errorf("%w: etcd: not sent (%v) (%w)", store.ErrUnavailable, cause, context.DeadlineExceeded)
}

// dropStale answers, without sending them, the ops that waited longer
// than the request timeout for their turn (the transactions before them
// were slow), and returns the others.
func (s *Store) dropStale(ops []*op) []*op {
	out := ops[:0]
	for _, o := range ops {
		if w := time.Since(o.queued); w > s.timeout {
			o.done <- errNotSent(fmt.Errorf("waited %s for the transactions before it", w.Round(time.Millisecond)))
			continue
		}
		out = append(out, o)
	}
	clear(ops[len(out):])
	return out
}

// failQueued answers ops, and every op waiting in the channel, with an
// unavailable error without sending them: the transaction before them just
// failed as unavailable, and each of theirs would wait out the request
// timeout in turn.
func (s *Store) failQueued(ops []*op, cause error) {
	err := errNotSent(cause)
	for _, o := range ops {
		o.done <- err
	}
	for {
		select {
		case o := <-s.ops:
			o.done <- err
		default:
			return
		}
	}
}

// commit commits as many of ops (in order) as fit one transaction,
// answers them, and returns the rest. A transaction that lost a race with
// another writer (a compare failed) is read and tried again. When etcd is
// unavailable, the rest and the ops queued behind fail at once.
func (s *Store) commit(ops []*op) []*op {
	if ops = s.dropStale(ops); len(ops) == 0 {
		return nil
	}
	mode := readHinted
	for attempt := 0; ; attempt++ {
		b, rest, err := s.prepareN(ops, len(ops), mode)
		if err != nil {
			// Nothing was sent.
			for _, o := range ops {
				o.done <- err
			}
			if errors.Is(err, store.ErrUnavailable) {
				s.failQueued(nil, err)
			}
			return nil
		}
		if b.refused && mode != readLinear {
			// A refusal must rest on current values: read again,
			// linearizably, before answering it.
			mode = readLinear
			continue
		}
		if len(b.ops) == 0 {
			// Every op was answered in prepare (refused or cancelled).
			s.answer(b, nil)
			return rest
		}
		began := time.Now()
		ok, err := s.commitBatch(b)
		switch {
		case err == nil && ok:
			s.commits.Add(1)
			s.observeCommit(began, len(b.ops))
			s.answer(b, nil)
			return rest
		case err == nil:
			// Conflict: another replica changed a key we read (or
			// the member read from lagged, or a hint was wrong).
			// When it appended (the log's head moved; the
			// transaction returned the new head keys, which prepare
			// uses), try again at once; otherwise, or when that
			// keeps failing, read linearizably.
			s.conflicts.Add(1)
			mode = afterConflict(b, attempt)
			if attempt > 3 {
				time.Sleep(time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt-3, 5))))
			}
			if attempt >= 200 {
				s.answer(b, fmt.Errorf("%w: etcd: too much contention (%d conflicting attempts) (%w)", store.ErrUnavailable, attempt, context.DeadlineExceeded))
				return rest
			}
			// Retry the same ops (the refused ones are decided
			// again: the keys they read may have changed too).
			continue
		case len(b.ops) > 1 && (errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge)):
			return s.commitOneByOne(b, rest)
		case notApplied(err) && !errors.Is(rpctypes.Error(err), rpctypes.ErrNoSpace) && s.timeLeft(ops):
			// Surely not applied, and for a moment only (an
			// election, a member that lost its leader): the same
			// ops again shortly, read afresh, while they are within
			// their request timeout.
			time.Sleep(50 * time.Millisecond)
			mode = readLinear
			continue
		default:
			werr := s.wrap(err)
			s.fail(b, err, werr)
			// The ops queued behind are answered without being sent
			// only when etcd cannot be read either: one attempt lost
			// on a member that froze must not fail them all.
			if errors.Is(werr, store.ErrUnavailable) && !s.reachable() {
				s.failQueued(rest, werr)
				return nil
			}
			return rest
		}
	}
}

// afterConflict is how commit reads again after b's transaction lost its
// compare: at once from the hints when another replica appended (the
// log's head moved; the transaction returned the new head keys, which
// prepare uses) in the first attempts, linearizably otherwise, or when
// that keeps failing.
func afterConflict(b *batch, attempt int) readMode {
	if !b.headMoved || attempt >= 2 {
		return readLinear
	}
	// A value hinted (a join token as attested) may have failed too:
	// those ops are read.
	for _, o := range b.all {
		for _, kv := range o.hints {
			if kv != nil {
				o.hints = nil
				break
			}
		}
	}
	return readHinted
}

// commitOneByOne answers the refusals of b, whose transaction was surely
// not applied (too many operations, too large), then commits its ops one
// at a time, with the refusals that rested on their writes. It returns
// the ops left for the next batch, none when etcd was unavailable (they
// have failed).
func (s *Store) commitOneByOne(b *batch, rest []*op) []*op {
	var answered, alone []*op
	for _, o := range b.all {
		if slices.Contains(b.ops, o) || b.dependent[o] {
			alone = append(alone, o)
		} else {
			answered = append(answered, o)
		}
	}
	s.answer(&batch{all: answered, errs: b.errsFor(answered)}, nil)
	for i, o := range alone {
		if err := s.commitAlone(o); err != nil {
			s.failQueued(slices.Concat(alone[i+1:], rest), err)
			return nil
		}
	}
	return rest
}

// observeCommit reports a committed write transaction to OnCommit.
func (s *Store) observeCommit(began time.Time, writes int) {
	if s.onCommit != nil {
		s.onCommit(time.Since(began), writes)
	}
}

// commitAlone commits o in a transaction of its own. It returns the error
// when etcd was unavailable.
func (s *Store) commitAlone(o *op) error {
	for attempt := 0; ; attempt++ {
		b, _, err := s.prepareN([]*op{o}, 1, readLinear)
		if err != nil {
			o.done <- err
			if errors.Is(err, store.ErrUnavailable) {
				return err
			}
			return nil
		}
		if len(b.ops) == 0 {
			s.answer(b, nil)
			return nil
		}
		began := time.Now()
		ok, err := s.commitBatch(b)
		switch {
		case err != nil:
			werr := s.wrap(err)
			s.fail(b, err, werr)
			if errors.Is(werr, store.ErrUnavailable) {
				return werr
			}
			return nil
		case ok:
			s.commits.Add(1)
			s.observeCommit(began, 1)
			s.answer(b, nil)
			return nil
		case attempt >= 50:
			s.answer(b, fmt.Errorf("%w: etcd: too much contention (%w)", store.ErrUnavailable, context.DeadlineExceeded))
			return nil
		}
	}
}

// answer tells every op of b its outcome: its refusal or context error,
// else err (nil when the transaction committed).
func (s *Store) answer(b *batch, err error) {
	if err == nil && len(b.hashes) > 0 {
		b.state.Border(s.nodes.add)
		for _, n := range b.nodes {
			s.nodes.add(n.id, n.hash)
		}
		if b.sth != nil {
			s.seenSTH.Store(&seenSTH{rev: b.rev, sth: b.sth})
			b.signer.TreeHeadCommitted(b.sth)
		} else if s.onLogAppend != nil {
			s.onLogAppend()
		}
	}
	for i, o := range b.all {
		e := b.errs[i]
		if e == nil {
			e = err
			if err == nil && o.committed != nil {
				o.committed()
			}
		}
		o.done <- e
	}
}

// fail answers the ops of a batch whose transaction failed with err (werr
// as the store reports it). The ops in the transaction get werr, as an
// *outcomeUnknown when the transaction may have been applied; the
// refusals that rested on their writes (a join token another op of the
// batch consumed) get werr too, as those writes may not exist; the other
// refusals stand.
func (s *Store) fail(b *batch, err, werr error) {
	unknown := errors.Is(werr, store.ErrUnavailable) && !notApplied(err)
	for i, o := range b.all {
		e := b.errs[i]
		switch {
		case e == nil && unknown:
			e = &outcomeUnknown{werr}
		case e == nil || b.dependent[o]:
			e = werr
		}
		o.done <- e
	}
}
