// Package etcd is the store backend for several CA replicas sharing one
// state: an etcd cluster, through go.etcd.io/etcd/client/v3. It passes the
// same conformance suite (store/storetest) as store/bolt, the reference.
//
// Every change that touches several keys is one etcd transaction guarded by
// compare-and-swap: an issuance reads the keys it depends on (the serial,
// the join token, the replay keys, the leaf's hash, the log's state), then
// commits the certificate record, the token's consumption, the replay keys
// and the log entry in one Txn whose compares require each of those keys to
// be unchanged since it was read. A replica whose transaction lost a race
// with another replica reads again and retries, so a join token is single
// use across replicas and the issuance log, whose state key every append
// compares, has one linear history.
//
// An issuance usually needs no read: its keys are expected absent, but the
// join token, which the join token provisioner has just read, and the
// log's head (state and tree head) is known from the replica's own
// commits, from the transaction that lost a race (its Else branch returns
// the head it lost to) and from a watch once another replica appends
// (head.go). Such a batch is sent with those values as its compares; a
// wrong one only costs a retry, after a read. A store with a commit
// signer (Options.TreeHeads: the daemon's logsign.BatchSigner) writes each
// batch's signed tree head in the batch's transaction, so tree heads need
// no round of their own. Replicas appending at the same time take turns
// rather than race (awaitTurn).
//
// As in store/bolt, writes go through a single committer goroutine per
// replica that gathers the writes waiting at the moment into one write
// transaction (group commit), bounded by etcd's --max-txn-ops and request
// size. Each write checks everything it depends on before it
// writes, so a refused write leaves nothing behind and the others in its
// batch still commit. A transaction that fails for another reason is
// retried write by write when it was surely not applied (too many
// operations, too large). When its outcome is unknown (a timeout, a lost
// connection: the etcd client never sends a write again once it reached a
// member) every write in it fails with store.ErrUnavailable, and so do the
// refusals that rested on its writes (a join token another write of the
// batch consumed); Issue then reads its record back, linearizably, and
// reports success when the transaction did commit, so that an agent is not
// told "retry" for a certificate whose join token is already spent. A write
// still unanswered when a transaction fails as unavailable fails at once
// rather than wait out the timeout again.
//
// Every call is bounded by Options.RequestTimeout; a cluster without quorum
// makes them fail with an error wrapping store.ErrUnavailable and
// context.DeadlineExceeded.
//
// The store also implements store.Watcher (etcd watches, so a replica's
// caches follow the others' revocations, log appends, tree heads and trust
// anchors) and store.TreeHeadPublisher (the first tree head stored for a
// size wins; see log.go).
package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultPrefix         = "/agentca"
	DefaultRequestTimeout = 5 * time.Second
	DefaultDialTimeout    = 5 * time.Second
	// DefaultMaxTxnOps is etcd's own default --max-txn-ops.
	DefaultMaxTxnOps = 128
	// maxTxnBytes keeps a transaction under etcd's default
	// --max-request-bytes (1.5 MiB).
	maxTxnBytes = 1 << 20
)

const schema = "1"

// Options configure the store.
type Options struct {
	// Endpoints are the etcd client URLs. Required unless Client is set.
	Endpoints []string
	// Prefix is put before every key, so several CAs can share a
	// cluster; empty means DefaultPrefix. It must start with "/" and not
	// end with one.
	Prefix string
	// TLS, when set, is used to reach etcd (https endpoints, client
	// certificates).
	TLS *tls.Config
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// DialTimeout bounds connecting; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds every call to etcd; zero means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxTxnOps is the cluster's --max-txn-ops: the most operations one
	// transaction may hold; zero means DefaultMaxTxnOps, and less than
	// MinTxnOps is refused. Batches are sized to fit it.
	MaxTxnOps int
	// MaxBatch bounds the writes applied in one transaction; zero means
	// 1024 (MaxTxnOps usually binds first).
	MaxBatch int
	// OnLogAppend, when set, is called by the committer after each
	// commit that appended to the issuance log, before any of the
	// batch's callers is answered. It must not block. Appends by other
	// replicas are seen through Watch (store.ChangeLog).
	OnLogAppend func()
	// TreeHeads, when set, signs the tree head of each batch that
	// appends, written in the batch's transaction (see TreeHeadSigner).
	TreeHeads TreeHeadSigner
	// OnCommit, when set, is called after each batch transaction etcd
	// committed, with its round trip and the number of writes it
	// applied (metrics). It must not block.
	OnCommit func(took time.Duration, writes int)
	// Client, when set, is used instead of dialling Endpoints; Close
	// does not close it.
	Client *clientv3.Client
	// MustExist refuses a prefix that holds no CA (store.ErrNoStore)
	// instead of starting a new one: only agentca init and migrate do.
	MustExist bool
	// ProbeInterval is how often Watch proves it is up to date
	// (FreshAt); zero means DefaultProbeInterval.
	ProbeInterval time.Duration
	// HealthInterval is how often each member is checked (health.go);
	// zero means DefaultHealthInterval.
	HealthInterval time.Duration
	// AttemptTimeout bounds one attempt of a transaction or a read, so
	// that one sent to a member that froze is given up and tried again
	// (or answered as of unknown outcome) long before RequestTimeout;
	// zero means DefaultAttemptTimeout, and it is never more than
	// RequestTimeout.
	AttemptTimeout time.Duration
	// Logger gets the member health changes; nil discards.
	Logger *slog.Logger
}

// Store is a store.Store on an etcd cluster.
type Store struct {
	cli       *clientv3.Client
	ownClient bool
	k         keys
	timeout   time.Duration
	maxOps    int
	maxBatch  int

	ops    chan *op
	quit   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	// senders counts the writers between their closed check and their
	// send (see write and drain).
	senders atomic.Int64

	onLogAppend func()
	onCommit    func(time.Duration, int)

	commits, conflicts, reads atomic.Int64
	// lastState is the log state LogState last read; seenSTH the tree
	// head key as PublishTreeHead last saw it.
	lastState atomic.Pointer[translog.State]
	seenSTH   atomic.Pointer[seenSTH]

	// sthSigner, when set (Options.TreeHeads), signs the tree head of
	// each batch that appends, in the batch's transaction.
	sthSigner TreeHeadSigner
	// lastSigned is the last tree head sthSigner signed.
	lastSigned atomic.Pointer[ct.SignedTreeHead]
	// importRev is the revision of the mark this store's Import wrote
	// (import.go).
	importRev atomic.Int64
	// nodes caches the newest tree nodes (nodecache.go).
	nodes *nodeCache
	// tokenHints are the join tokens JoinToken read, for the issuance
	// that consumes them (op.hints).
	tokenHints kvHints
	// head is the newest log state and tree head keys the committer
	// knows of (its own commits, and what a lost race returned): a
	// serializable read from a member that has not applied them yet
	// would only make the next batch lose its compare.
	head atomic.Pointer[logHead]
	// headCh wakes a committer waiting for its turn (awaitTurn) when
	// the head moves; ownRev is the revision of this store's last
	// commit that appended, otherAt when another replica last appended
	// (Unix ns), sending the log state the transaction in flight
	// writes, commitTime the recent time of a write transaction (ns,
	// moving average).
	headCh  chan struct{}
	ownRev  atomic.Int64
	otherAt atomic.Int64
	// otherRev is the last other replica's commit counted, othersSince
	// how many were counted since this store's last commit, turnNeed
	// how many to let go first (awaitTurn).
	otherRev    atomic.Int64
	othersSince atomic.Int64
	turnNeed    atomic.Int64
	sending     atomic.Pointer[[]byte]
	commitTime  atomic.Int64
	// The head watch (watchHead) starts once another replica is seen
	// appending: a store alone never needs it.
	headCtx   context.Context
	stopHead  context.CancelFunc
	headWatch sync.Once
	headWG    sync.WaitGroup

	// fresh is how recently Watch proved it has applied every
	// revocation (fresh.go); probeInterval how often it asks.
	fresh         freshness
	probeInterval time.Duration
	// health checks the members (health.go); attempt bounds one
	// attempt of a request.
	health  *health
	attempt time.Duration

	// commitHook, when set (by tests), is called by the committer in
	// place of sending a write transaction; send sends it.
	commitHook atomic.Pointer[func(send func() (bool, error)) (bool, error)]
}

// Stats counts the committer's write transactions.
type Stats struct {
	// Commits is the number of batches committed; Conflicts the number
	// of attempts that found a key changed by another writer and were
	// tried again; Reads the number of attempts that read the keys
	// their writes depend on first (the others went on hints).
	Commits, Conflicts, Reads int64
}

// Stats returns the counts so far.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Conflicts: s.conflicts.Load(), Reads: s.reads.Load()}
}

var (
	_ store.Store             = (*Store)(nil)
	_ store.Watcher           = (*Store)(nil)
	_ store.TreeHeadPublisher = (*Store)(nil)
)

// Open connects to etcd, checks (or writes, for a new prefix) the schema
// version and starts the committer. It fails when etcd cannot be reached
// within the request timeout.
func Open(ctx context.Context, opts Options) (*Store, error) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = DefaultMaxTxnOps
	}
	if opts.MaxTxnOps < MinTxnOps {
		return nil, fmt.Errorf("store: etcd max_txn_ops %d is too small: an issuance may need %d operations in one transaction (set the cluster's --max-txn-ops, and max_txn_ops, to at least %d; etcd's default is %d)",
			opts.MaxTxnOps, MinTxnOps, MinTxnOps, DefaultMaxTxnOps)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	opts.AttemptTimeout = min(opts.AttemptTimeout, opts.RequestTimeout)
	s := &Store{probeInterval: opts.ProbeInterval, attempt: opts.AttemptTimeout, cli: opts.Client, k: keys{prefix}, timeout: opts.RequestTimeout, maxOps: opts.MaxTxnOps, maxBatch: opts.MaxBatch,
		ops: make(chan *op, opts.MaxBatch), quit: make(chan struct{}), done: make(chan struct{}), onLogAppend: opts.OnLogAppend, sthSigner: opts.TreeHeads, onCommit: opts.OnCommit,
		nodes: newNodeCache(), headCh: make(chan struct{}, 1)}
	if s.cli == nil {
		if len(opts.Endpoints) == 0 {
			return nil, errors.New("store: etcd: no endpoints")
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            opts.Endpoints,
			DialTimeout:          opts.DialTimeout,
			DialKeepAliveTime:    5 * time.Second,
			DialKeepAliveTimeout: 2 * time.Second,
			TLS:                  opts.TLS,
			Username:             opts.Username,
			Password:             opts.Password,
			Logger:               zap.NewNop(),
			Context:              context.WithoutCancel(ctx),
		})
		if err != nil {
			return nil, fmt.Errorf("store: etcd %s: %w", strings.Join(opts.Endpoints, ","), err)
		}
		s.cli, s.ownClient = cli, true
	}
	check := s.initSchema
	if opts.MustExist {
		check = func(ctx context.Context) error {
			if err := s.checkExists(ctx); err != nil {
				return err
			}
			return s.initSchema(ctx)
		}
	}
	if err := check(ctx); err != nil {
		if s.ownClient {
			s.cli.Close()
		}
		return nil, err
	}
	s.headCtx, s.stopHead = context.WithCancel(context.WithoutCancel(ctx))
	s.startHealth(opts)
	go s.commitLoop()
	return s, nil
}

// ValidatePrefix checks a key prefix: it starts with "/", does not end
// with one, and is printable ASCII.
func ValidatePrefix(p string) error {
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || len(p) > 256 {
		return fmt.Errorf("store: etcd prefix %q: want /name (starting with a slash, not ending with one)", p)
	}
	for _, r := range p {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("store: etcd prefix %q: only printable ASCII without spaces", p)
		}
	}
	return nil
}

// initSchema writes the schema version and the empty log state under a
// new prefix (one transaction, so concurrent first opens agree), or checks
// the stored version.
func (s *Store) initSchema(ctx context.Context) error {
	st, err := translog.State{}.MarshalBinary()
	if err != nil {
		return err
	}
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.k.schema()), "=", 0)).
		Then(clientv3.OpPut(s.k.schema(), schema), clientv3.OpPut(s.k.logState(), string(st))).
		Else(clientv3.OpGet(s.k.schema()), clientv3.OpGet(s.k.migrating())).Commit()
	if err != nil {
		return s.wrap(err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 || string(kvs[0].Value) != schema {
			return fmt.Errorf("store: etcd prefix %s: unsupported schema version %q", s.k.p, valueOf(kvs))
		}
		if m := resp.Responses[1].GetResponseRange().Kvs; len(m) > 0 {
			return fmt.Errorf("store: etcd prefix %s: an import (agentca migrate) into it started at %s and did not finish; run it again after deleting the prefix (etcdctl del --prefix %s/)",
				s.k.p, m[0].Value, s.k.p)
		}
	}
	return nil
}

func valueOf(kvs []*mvccpb.KeyValue) string {
	if len(kvs) == 0 {
		return ""
	}
	return string(kvs[0].Value)
}

// Client returns the etcd client (for tools that inspect the cluster).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.k.p }

// Close finishes the pending writes and closes the client it dialled.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		<-s.done
		s.headWG.Wait()
		return nil
	}
	close(s.quit)
	<-s.done
	s.stopHead()
	s.headWG.Wait()
	s.stopHealth()
	if s.ownClient {
		return s.cli.Close()
	}
	return nil
}

func (s *Store) isClosed() bool { return s.closed.Load() }

// reqCtx bounds one call to etcd by the request timeout.
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// wrap turns a client error into the store's: a caller's cancellation
// stays as it is; a timeout, an unreachable cluster or one that cannot
// take writes for now (no leader, no space left under its quota, too many
// requests, unhealthy) wraps store.ErrUnavailable and
// context.DeadlineExceeded, which the API answers with 503.
func (s *Store) wrap(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, context.Canceled), errors.Is(err, store.ErrUnavailable):
		return err
	case errors.Is(rpctypes.Error(err), rpctypes.ErrNoSpace):
		// The cluster's NOSPACE alarm: every write fails until an
		// operator compacts, defragments and disarms it (docs/ha.md).
		return fmt.Errorf("%w: etcd: %v: the cluster reached its --quota-backend-bytes; compact, defragment and disarm the alarm (see docs/ha.md) (%w)",
			store.ErrUnavailable, err, context.DeadlineExceeded)
	case isUnavailable(err):
		return fmt.Errorf("%w: etcd: %v (%w)", store.ErrUnavailable, err, context.DeadlineExceeded)
	}
	if s.closed.Load() && strings.Contains(err.Error(), "client connection is closing") {
		return store.ErrClosed
	}
	return fmt.Errorf("store: etcd: %w", err)
}

// isUnavailable matches the errors of a cluster that cannot answer or take
// a write for now: timeouts, a lost leader or connection, a full quota,
// too many requests, and gRPC's Unavailable and DeadlineExceeded codes,
// which the client returns as status errors.
func isUnavailable(err error) bool {
	err = rpctypes.Error(err) // a gRPC status error as etcd's own
	if notApplied(err) {
		return true
	}
	for _, e := range []error{context.DeadlineExceeded, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrLeaderChanged, rpctypes.ErrStopped} {
		if errors.Is(err, e) {
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "code = Unavailable") || strings.Contains(msg, "code = DeadlineExceeded") ||
		strings.Contains(msg, "context deadline exceeded")
}

// notApplied matches the errors etcd returns for a request it refused
// before applying it: no leader, no space, too many requests, an
// unhealthy member, a dropped proposal, no endpoint to send it to. A write
// that failed with another unavailable error (a timeout, a lost
// connection) may still have been committed.
func notApplied(err error) bool {
	err = rpctypes.Error(err)
	for _, e := range []error{clientv3.ErrNoAvailableEndpoints, rpctypes.ErrNoSpace, rpctypes.ErrTooManyRequests,
		rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrUnhealthy, rpctypes.ErrNotCapable} {
		if errors.Is(err, e) {
			return true
		}
	}
	return strings.Contains(err.Error(), "raft proposal dropped")
}

// get reads one key; nil when absent.
func (s *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*mvccpb.KeyValue, error) {
	ctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	resp, err := retryRead(ctx, s, func(ctx context.Context) (*clientv3.GetResponse, error) {
		return s.cli.Get(ctx, key, opts...)
	})
	if err != nil {
		return nil, s.wrap(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0], nil
}

// ---------------------------------------------------------------------
// The committer.

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
			mode = readLinear
			if b.headMoved && attempt < 2 {
				mode = readHinted
				// A value hinted (a join token as attested) may
				// have failed too: those ops are read.
				for _, o := range b.all {
					for _, kv := range o.hints {
						if kv != nil {
							o.hints = nil
							break
						}
					}
				}
			}
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
			// Surely not applied: commit them one at a time, with
			// the refusals that rested on their writes.
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

// commitAlone commits o in a transaction of its own. It returns the error
// when etcd was unavailable.
func (s *Store) observeCommit(began time.Time, writes int) {
	if s.onCommit != nil {
		s.onCommit(time.Since(began), writes)
	}
}

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

// batch is one transaction of the committer: the values read, the writes
// of the ops applied so far (which later ops see), the compares, and the
// log's side (as bolt's logBatch).
type batch struct {
	s    *Store
	snap map[string]*mvccpb.KeyValue // every key read; nil value: absent
	// overlay holds the batch's writes; a nil value is a delete.
	overlay map[string][]byte
	order   []string
	cmps    map[string]int64

	state    translog.State
	stateRev int64
	hashes   [][]byte
	// signer, when set, signs the tree head of the batch's new state
	// (sth), written in its transaction; rev is the transaction's
	// revision once committed.
	signer TreeHeadSigner
	sth    *ct.SignedTreeHead
	rev    int64
	// nodes are the tree nodes the batch writes, cached once committed.
	nodes []cachedNode
	// headMoved: the transaction lost the race to another append (the
	// log's head keys had moved), as opposed to a change of another key.
	headMoved bool

	refused bool // an op was refused
	// readOverlay is set when get returned one of the batch's own
	// writes; dependent holds the refused ops that read one.
	readOverlay bool
	dependent   map[*op]bool

	ops   []*op   // applied without refusal: in the transaction
	all   []*op   // every op decided in this batch
	errs  []error // their refusals (nil for the applied ones)
	bytes int
}

func (b *batch) errsFor(ops []*op) []error {
	out := make([]error, len(ops))
	for i, o := range ops {
		out[i] = b.errs[slices.Index(b.all, o)]
	}
	return out
}

var errNotRead = errors.New("store: etcd: internal error: a write read a key it did not declare")

// get returns the value of key as the batch sees it: the batch's own
// writes first, then what was read, whose mod revision the transaction
// then compares.
func (b *batch) get(key string) ([]byte, bool, error) {
	if v, ok := b.overlay[key]; ok {
		b.readOverlay = true
		return v, v != nil, nil
	}
	kv, ok := b.snap[key]
	if !ok {
		return nil, false, errNotRead
	}
	if _, seen := b.cmps[key]; !seen {
		var rev int64
		if kv != nil {
			rev = kv.ModRevision
		}
		b.cmps[key] = rev
	}
	if kv == nil {
		return nil, false, nil
	}
	return kv.Value, true, nil
}

func (b *batch) put(key string, v []byte) {
	if _, ok := b.overlay[key]; !ok {
		b.order = append(b.order, key)
	}
	b.overlay[key] = v
	b.bytes += len(key) + len(v)
}

func (b *batch) del(key string) {
	if _, ok := b.overlay[key]; !ok {
		b.order = append(b.order, key)
	}
	b.overlay[key] = nil
}

// nextIndex returns the index the next leaf of the batch gets.
func (b *batch) nextIndex() uint64 { return b.state.Size() + uint64(len(b.hashes)) }

// addLeaf writes leaf's entry at the next index and its hash index.
func (b *batch) addLeaf(leaf *translog.Leaf) uint64 {
	i := b.nextIndex()
	b.put(b.s.k.logEntry(i), leaf.Input)
	b.put(b.s.k.logHash(leaf.Hash), indexBytes(i))
	b.hashes = append(b.hashes, leaf.Hash)
	return i
}

// newNodes is how many tree nodes appending k leaves to a tree of n
// fixes (Append reports each once).
func newNodes(n, k uint64) int {
	c := 0
	for l := 0; l < 64 && (n+k)>>l > 0; l++ {
		c += int((n+k)>>l - n>>l)
	}
	return c
}

// prepareN reads what the first ops (at most n) depend on in one read,
// applies them in order, and stops before the first that would not fit a
// transaction. It returns the batch and the ops left for the next one.
//
// mode says how (readMode): from the ops' hints and the known log head
// without reading, when they have them (an issuance's first attempt), or
// serializable (served by the member the client talks to, without a
// round of the cluster), or linearizable. Hints and serializable reads
// may be stale, but the write transaction compares every key the ops
// read, so a stale value only costs a retry. Refusals, which commit
// nothing, are only answered from a linearizable read (see commit).
func (s *Store) prepareN(ops []*op, n int, mode readMode) (*batch, []*op, error) {
	// Read at most what could fit: every op reads and writes at least
	// one key.
	n = min(n, len(ops))
	seen := map[string]bool{s.k.logState(): true}
	readKeys := []string{s.k.logState()}
	// Besides the log state, a batch that appends writes the tree head
	// when a signer is installed: one more key read, compared and
	// written.
	signer := s.sthSigner
	logKeys := 1
	if signer != nil {
		seen[s.k.logSTH()] = true
		readKeys = append(readKeys, s.k.logSTH())
		logKeys = 2
	}
	reads := 0
	for i, o := range ops[:n] {
		if reads+len(o.keys) > 4*s.maxOps && i > 0 {
			n = i
			break
		}
		for _, k := range o.keys {
			if !seen[k] {
				seen[k] = true
				readKeys = append(readKeys, k)
			}
		}
		reads += len(o.keys)
	}
	snap := s.hinted(ops[:n], signer != nil, mode)
	if snap == nil {
		s.reads.Add(1)
		var err error
		snap, err = s.readKeys(readKeys, mode == readLinear)
		if err != nil {
			return nil, nil, err
		}
	}
	if h := s.head.Load(); h != nil {
		// The member read from may not have applied the last commits
		// yet: the compares make a mix of revisions safe (the
		// transaction fails unless every key is as used).
		snap[s.k.logState()] = newer(snap[s.k.logState()], h.state)
		if signer != nil {
			snap[s.k.logSTH()] = newer(snap[s.k.logSTH()], h.sth)
		}
	}
	b := &batch{s: s, snap: snap, overlay: map[string][]byte{}, cmps: map[string]int64{}, dependent: map[*op]bool{}, signer: signer}
	if kv := snap[s.k.logState()]; kv != nil {
		if err := b.state.UnmarshalBinary(kv.Value); err != nil {
			return nil, nil, fmt.Errorf("store: etcd: log state: %w", err)
		}
		b.stateRev = kv.ModRevision
	}
	writes := 0
	for i, o := range ops[:n] {
		if err := o.ctx.Err(); err != nil {
			b.all, b.errs = append(b.all, o), append(b.errs, err)
			continue
		}
		// Room for o: its writes, the nodes the batch's leaves fix
		// with o's, the state key, and its compares. One that cannot
		// fit even alone is refused: etcd would refuse it every time.
		if need, cmps := o.writes+newNodes(b.state.Size(), uint64(o.leaves))+logKeys, len(o.keys)+logKeys; need > s.maxOps || cmps > s.maxOps || o.bytes > maxTxnBytes {
			b.all = append(b.all, o)
			b.errs = append(b.errs, fmt.Errorf("store: etcd: this write needs %d operations (%d compares, about %d bytes) in one transaction, more than max_txn_ops %d (or %d bytes) allows",
				need, cmps, o.bytes, s.maxOps, maxTxnBytes))
			continue
		}
		leaves := uint64(len(b.hashes) + o.leaves)
		need := writes + o.writes + newNodes(b.state.Size(), leaves) + logKeys
		if len(b.all) > 0 && (need > s.maxOps || len(b.cmps)+len(o.keys)+logKeys > s.maxOps || b.bytes+o.bytes > maxTxnBytes) {
			return b, ops[i:], nil
		}
		nOrder, nHashes, nBytes := len(b.order), len(b.hashes), b.bytes
		b.readOverlay = false
		err := o.apply(b)
		var r *refusal
		switch {
		case errors.As(err, &r):
			if len(b.order) != nOrder || len(b.hashes) != nHashes {
				return nil, nil, fmt.Errorf("store: etcd: internal error: a refused write wrote (%w)", r.err)
			}
			b.all, b.errs = append(b.all, o), append(b.errs, r.err)
			b.refused = true
			if b.readOverlay {
				b.dependent[o] = true
			}
		case err != nil:
			// Not a refusal: this op fails alone; what it wrote is
			// dropped.
			for _, k := range b.order[nOrder:] {
				delete(b.overlay, k)
			}
			b.order, b.hashes, b.bytes = b.order[:nOrder], b.hashes[:nHashes], nBytes
			b.all, b.errs = append(b.all, o), append(b.errs, fmt.Errorf("store: %w", err))
		default:
			writes += o.writes
			b.ops = append(b.ops, o)
			b.all, b.errs = append(b.all, o), append(b.errs, nil)
		}
	}
	return b, ops[n:], nil
}

// readMode is how prepareN learns the values of the keys a batch reads.
type readMode int

const (
	// readHinted takes the values the ops expect (op.hints) and the
	// log's head as last known, without reading, when every op has
	// hints and the head is known; otherwise it reads from the member
	// the client talks to (serializable).
	readHinted readMode = iota
	// readLinear reads through the cluster's leader: current values.
	readLinear
)

// hinted returns the snapshot of what ops read made of their hints and
// the known log head, or nil when the keys must be read. The transaction
// compares every key as hinted, so a wrong hint only costs a retry.
func (s *Store) hinted(ops []*op, withSTH bool, mode readMode) map[string]*mvccpb.KeyValue {
	if mode != readHinted {
		return nil
	}
	h := s.head.Load()
	if h == nil || h.state == nil || (withSTH && h.sth == nil) {
		return nil
	}
	snap := map[string]*mvccpb.KeyValue{s.k.logState(): h.state}
	if withSTH {
		snap[s.k.logSTH()] = h.sth
	}
	for _, o := range ops {
		for _, k := range o.keys {
			kv, ok := o.hints[k]
			if !ok {
				return nil
			}
			snap[k] = kv
		}
	}
	return snap
}

// readKeys reads keys in as few transactions as --max-txn-ops allows.
func (s *Store) readKeys(keys []string, linear bool) (map[string]*mvccpb.KeyValue, error) {
	var opts []clientv3.OpOption
	if !linear {
		opts = append(opts, clientv3.WithSerializable())
	}
	out := make(map[string]*mvccpb.KeyValue, len(keys))
	ctx, cancel := s.reqCtx(context.Background())
	defer cancel()
	for chunk := range slices.Chunk(keys, s.maxOps) {
		gets := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			gets[i] = clientv3.OpGet(k, opts...)
		}
		resp, err := retryRead(ctx, s, func(ctx context.Context) (*clientv3.TxnResponse, error) {
			return s.cli.Txn(ctx).Then(gets...).Commit()
		})
		if err != nil {
			return nil, s.wrap(err)
		}
		for i, r := range resp.Responses {
			var kv *mvccpb.KeyValue
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				kv = kvs[0]
			}
			out[chunk[i]] = kv
		}
	}
	return out, nil
}

// commitBatch flushes the batch's leaves to the tree and commits its
// writes if every key it read is unchanged. It reports false on a
// conflict.
func (s *Store) commitBatch(b *batch) (bool, error) {
	if len(b.hashes) > 0 {
		next, err := b.state.Append(b.hashes, func(id compact.NodeID, hash []byte) error {
			b.put(s.k.node(id), hash)
			b.nodes = append(b.nodes, cachedNode{id, hash})
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("issuance log: %w", err)
		}
		v, err := next.MarshalBinary()
		if err != nil {
			return false, err
		}
		b.put(s.k.logState(), v)
		b.cmps[s.k.logState()] = b.stateRev
		if b.signer != nil {
			b.signTreeHead(next)
		}
	}
	// A batch that appends and loses the race gets the log's head keys
	// back (Else), to try again without reading them.
	var heads []clientv3.Op
	if len(b.hashes) > 0 {
		heads = []clientv3.Op{clientv3.OpGet(s.k.logState()), clientv3.OpGet(s.k.logSTH())}
	}
	if len(b.order) == 0 {
		return true, nil
	}
	// The log's head keys first: etcd stops at the first compare that
	// fails, and they are what a race with another replica changes.
	cmps := make([]clientv3.Cmp, 0, len(b.cmps))
	for _, k := range []string{s.k.logState(), s.k.logSTH()} {
		if rev, ok := b.cmps[k]; ok {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
		}
	}
	for k, rev := range b.cmps {
		if k != s.k.logState() && k != s.k.logSTH() {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", rev))
		}
	}
	puts := make([]clientv3.Op, 0, len(b.order))
	for _, k := range b.order {
		if v := b.overlay[k]; v != nil {
			puts = append(puts, clientv3.OpPut(k, string(v)))
		} else {
			puts = append(puts, clientv3.OpDelete(k))
		}
	}
	// One attempt: a transaction sent to a member that froze is given
	// up long before the request timeout (its outcome is unknown: see
	// fail), and the next goes to another member (health.go).
	// A member that has lost its leader refuses at once (ErrNoLeader,
	// surely not applied) instead of holding the transaction.
	ctx, done, givenUp := s.attemptCtx(clientv3.WithRequireLeader(context.Background()))
	defer done()
	send := func() (bool, error) {
		t0 := time.Now()
		if len(heads) > 0 {
			v := b.overlay[s.k.logState()]
			s.sending.Store(&v)
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Else(heads...).Commit()
		err = givenUp(err)
		// Cleared once the head is learnt (ownRev), so the head watch
		// never takes this commit for another replica's.
		defer s.sending.Store(nil)
		took := time.Since(t0)
		s.commitTime.Store((s.commitTime.Load()*7 + int64(took)) / 8)
		if err != nil {
			return false, err
		}
		b.rev = resp.Header.Revision
		if len(heads) > 0 {
			b.learnHead(resp)
		}
		return resp.Succeeded, nil
	}
	if h := s.commitHook.Load(); h != nil {
		return (*h)(send)
	}
	return send()
}

// kvHints holds key-values read for a write that follows, each taken
// once. It is bounded: a read not followed by its write (a refused
// attestation) is dropped eventually.
type kvHints struct {
	mu sync.Mutex
	m  map[string]*mvccpb.KeyValue
}

const maxKVHints = 4096

func (h *kvHints) put(kv *mvccpb.KeyValue) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= maxKVHints {
		h.m = make(map[string]*mvccpb.KeyValue)
	}
	h.m[string(kv.Key)] = kv
}

func (h *kvHints) take(key string) *mvccpb.KeyValue {
	h.mu.Lock()
	defer h.mu.Unlock()
	kv := h.m[key]
	delete(h.m, key)
	return kv
}

// signWithin signs the tree head of st with cs, unless the last tree head
// signed is of st already (a batch tried again after a compare other than
// the head's failed), within a quarter of the request timeout: the log key
// may be in an HSM, and a slow or hung one must not stop every write. A
// batch whose signature is late commits without a tree head (its caller
// then signs on its own, outside the committer).
func (s *Store) signWithin(cs TreeHeadSigner, st translog.State, minTS uint64) (*ct.SignedTreeHead, error) {
	if last := s.lastSigned.Load(); last != nil && last.TreeSize == st.Size() && last.Timestamp >= minTS &&
		bytes.Equal(last.SHA256RootHash[:], st.Root()) {
		return last, nil
	}
	type result struct {
		sth *ct.SignedTreeHead
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sth, err := cs.SignTreeHead(st, minTS)
		ch <- result{sth, err}
	}()
	t := time.NewTimer(s.timeout / 4)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err == nil {
			s.lastSigned.Store(r.sth)
		}
		return r.sth, r.err
	case <-t.C:
		return nil, fmt.Errorf("store: etcd: the log key took more than %s to sign a tree head", s.timeout/4)
	}
}

type cachedNode struct {
	id   compact.NodeID
	hash []byte
}

// signTreeHead signs the tree head of next, the batch's new log state,
// and adds it to the transaction, compared as read: the first tree head
// of each size is the only one. A stored tree head it cannot read, or one
// not smaller than next (the store was altered), or a failed signature
// leaves the batch without one: its caller signs as it would without a
// commit signer.
func (b *batch) signTreeHead(next translog.State) {
	key := b.s.k.logSTH()
	kv, ok := b.snap[key]
	if !ok {
		return
	}
	var rev int64
	var minTS uint64
	if kv != nil {
		prev, err := decodeSTH(kv)
		if err != nil || prev.TreeSize >= next.Size() {
			return
		}
		rev, minTS = kv.ModRevision, prev.Timestamp
	}
	sth, err := b.s.signWithin(b.signer, next, minTS)
	if err != nil || sth.TreeSize != next.Size() || sth.Timestamp < minTS {
		return
	}
	v, err := json.Marshal(sth)
	if err != nil {
		return
	}
	b.put(key, v)
	b.cmps[key] = rev
	b.sth = sth
}

// ---------------------------------------------------------------------
// Records.

// Issue implements store.Store.
func (s *Store) Issue(ctx context.Context, iss *store.Issuance) error {
	serial, err := store.NormalizeSerial(iss.Certificate.Serial)
	if err != nil {
		return err
	}
	rec := iss.Certificate
	rec.Serial = serial
	rec.LogIndex, rec.LogTimestamp = 0, 0 // the store assigns them
	leaf := iss.LogLeaf
	if leaf != nil && (leaf.Timestamp() == 0 || !bytes.Equal(leaf.Certificate(), rec.DER)) {
		return errors.New("store: the log leaf is not the certificate's (or has no timestamp)")
	}
	certJSON, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	exp, err := json.Marshal(&expiryEntry{Serial: serial, IssuerSKI: rec.IssuerSKI, Provisioner: rec.Provisioner, NotAfter: rec.NotAfter})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	certKey := s.k.cert(serial)
	o := &op{keys: []string{certKey}, writes: 2 + len(iss.Once), bytes: len(certJSON) + len(exp) + 200}
	var taskKey string
	if rec.Task != "" {
		taskKey = s.k.taskEnded(rec.Task)
		o.keys = append(o.keys, taskKey)
	}
	var tokKey string
	if iss.JoinToken != nil {
		tokKey = s.k.token(iss.JoinToken)
		o.keys = append(o.keys, tokKey)
		o.writes++
		o.bytes += 400
	}
	for _, k := range iss.Once {
		o.keys = append(o.keys, s.k.once(k))
	}
	var renKey string
	if parent := rec.RenewedFrom; parent != "" {
		// The parent's record and renewal key: read and compared, so
		// a revocation or another renewal of it is never outrun.
		renKey = s.k.renewal(parent)
		o.keys = append(o.keys, s.k.cert(parent), renKey)
		o.writes++
		o.bytes += 200
	}
	if leaf != nil {
		o.keys = append(o.keys, s.k.logHash(leaf.Hash))
		o.writes += 2
		o.leaves = 1
		o.bytes += len(leaf.Input) + 200
	}
	// Hints: every key absent (a new serial, task, replay key and leaf),
	// but the join token, as JoinToken just read it. A batch of hinted
	// ops is committed without a read first; a wrong hint fails its
	// compare and the batch is read and decided again.
	o.hints = make(map[string]*mvccpb.KeyValue, len(o.keys))
	for _, k := range o.keys {
		o.hints[k] = nil
	}
	if tokKey != "" {
		if kv := s.tokenHints.take(tokKey); kv != nil {
			o.hints[tokKey] = kv
		} else {
			o.hints = nil
		}
	}
	if renKey != "" {
		o.hints = nil // the parent's record exists: read it
	}
	var logIndex uint64 // set by the apply that commits
	o.apply = func(b *batch) error {
		// Checks first; nothing is written until all pass.
		if _, ok, err := b.get(certKey); err != nil {
			return err
		} else if ok {
			return refuse(store.ErrDuplicateSerial)
		}
		if taskKey != "" {
			if _, ok, err := b.get(taskKey); err != nil {
				return err
			} else if ok {
				return refuse(store.ErrTaskEnded)
			}
		}
		var tok store.JoinToken
		if tokKey != "" {
			v, ok, err := b.get(tokKey)
			if err != nil {
				return err
			}
			if !ok {
				return refuse(store.ErrTokenInvalid)
			}
			if err := json.Unmarshal(v, &tok); err != nil {
				return fmt.Errorf("decode join token: %w", err)
			}
			if !tok.Usable(iss.Certificate.SPIFFEID, iss.Certificate.Provisioner, iss.Now) {
				return refuse(store.ErrTokenInvalid)
			}
		}
		for i, k := range iss.Once {
			if _, ok, err := b.get(s.k.once(k)); err != nil {
				return err
			} else if ok || slices.Contains(iss.Once[:i], k) {
				return refuse(store.ErrReplay)
			}
		}
		var renJSON []byte
		if renKey != "" {
			var err error
			if renJSON, err = checkRenewal(b, iss, serial); err != nil {
				return err
			}
		}
		if leaf != nil {
			if _, ok, err := b.get(s.k.logHash(leaf.Hash)); err != nil {
				return err
			} else if ok {
				return refuse(fmt.Errorf("%w: the log already holds this certificate", store.ErrDuplicateSerial))
			}
		}
		var tokJSON []byte
		if tokKey != "" {
			tok.UsedBy, tok.UsedAt = serial, iss.Now.UTC()
			var err error
			if tokJSON, err = json.Marshal(&tok); err != nil {
				return err
			}
		}
		// Writes.
		v := certJSON
		if leaf != nil {
			logIndex = b.addLeaf(leaf)
			v = withLogFields(certJSON, logIndex, leaf.Timestamp())
		}
		b.put(certKey, v)
		b.put(s.k.certExpiry(rec.NotAfter, serial), exp)
		if tokKey != "" {
			b.put(tokKey, tokJSON)
		}
		for _, k := range iss.Once {
			b.put(s.k.once(k), []byte(serial))
		}
		if renKey != "" {
			b.put(renKey, renJSON)
		}
		return nil
	}
	if err := s.write(ctx, o); err != nil {
		var unknown *outcomeUnknown
		if !errors.As(err, &unknown) {
			return s.afterIssue(ctx, iss, err)
		}
		// The transaction may have been committed: an agent retrying
		// would then be refused (its join token or replay keys spent),
		// so find out.
		c, rerr := s.recheck(ctx, certKey, rec.DER)
		if rerr != nil || c == nil {
			return err
		}
		if leaf != nil {
			if s.onLogAppend != nil {
				s.onLogAppend()
			}
			iss.Certificate.LogIndex, iss.Certificate.LogTimestamp = c.LogIndex, c.LogTimestamp
		}
		return nil
	}
	if leaf != nil {
		iss.Certificate.LogIndex, iss.Certificate.LogTimestamp = logIndex, leaf.Timestamp()
	}
	return nil
}

// recheck reads a certificate record linearizably after an issuance whose
// transaction's outcome is unknown: it returns the record when it holds
// der (the issuance was committed), nil when etcd answers that it does not
// (it was not, unless etcd still holds the transaction and applies it
// later: the caller answers "unavailable" then, as before). It retries
// while etcd is unavailable, within ctx and a quarter of the request
// timeout (at least 200 ms), so that a caller is answered about the
// request timeout after it asked even without quorum.
func (s *Store) recheck(ctx context.Context, key string, der []byte) (*store.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout/4, 200*time.Millisecond))
	defer cancel()
	for {
		// Without a leader, fail at once (and try again) rather
		// than wait.
		resp, err := s.cli.Get(clientv3.WithRequireLeader(ctx), key)
		if err == nil {
			if len(resp.Kvs) == 0 {
				return nil, nil
			}
			var c store.Certificate
			if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
				return nil, fmt.Errorf("store: decode certificate: %w", err)
			}
			if !bytes.Equal(c.DER, der) {
				return nil, nil
			}
			return &c, nil
		}
		if !isUnavailable(err) {
			return nil, s.wrap(err)
		}
		select {
		case <-ctx.Done():
			return nil, s.wrap(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// withLogFields adds "log_index" and "log_timestamp" to a certificate
// record's JSON encoding (made before the transaction, with both fields
// zero and so omitted), in a new slice.
func withLogFields(rec []byte, index, timestamp uint64) []byte {
	out := make([]byte, 0, len(rec)+64)
	out = append(out, rec[:len(rec)-1]...) // drop the closing brace
	return fmt.Appendf(out, `,"log_index":%d,"log_timestamp":%d}`, index, timestamp)
}

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (*store.Certificate, error) {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	kv, err := s.get(ctx, s.k.cert(sn))
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, store.ErrNotFound
	}
	var c store.Certificate
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, fmt.Errorf("store: decode certificate %s: %w", sn, err)
	}
	return &c, nil
}

// ListCertificates implements store.Store.
func (s *Store) ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 1000
	}
	from := s.k.certs()
	if opts.After != "" {
		after, err := store.NormalizeSerial(opts.After)
		if err != nil {
			return nil, err
		}
		from = s.k.cert(after) + "\x00"
	}
	end := clientv3.GetPrefixRangeEnd(s.k.certs())
	page := int64(max(limit, 100))
	var out []store.Certificate
	for len(out) < limit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithLimit(page))
		cancel()
		if err != nil {
			return nil, s.wrap(err)
		}
		for _, kv := range resp.Kvs {
			var rec store.Certificate
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, fmt.Errorf("store: decode certificate %s: %w", kv.Key, err)
			}
			if opts.SPIFFEID != "" && rec.SPIFFEID != opts.SPIFFEID || opts.Task != "" && rec.Task != opts.Task ||
				opts.Parent != "" && rec.Parent != opts.Parent {
				continue
			}
			if out = append(out, rec); len(out) == limit {
				break
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return out, nil
}

// rangeAll reads every key under prefix, in pages.
func (s *Store) rangeAll(ctx context.Context, from, end string, fn func(kv *mvccpb.KeyValue) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, from, clientv3.WithRange(end), clientv3.WithLimit(1000))
		cancel()
		if err != nil {
			return s.wrap(err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revocations implements store.Store.
func (s *Store) Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]store.Revocation, error) {
	if _, err := hex.DecodeString(issuerSKI); err != nil || issuerSKI == "" {
		return nil, fmt.Errorf("store: bad issuer SKI %q", issuerSKI)
	}
	prefix := s.k.revs(strings.ToLower(issuerSKI))
	var out []store.Revocation
	err := s.rangeAll(ctx, prefix, clientv3.GetPrefixRangeEnd(prefix), func(kv *mvccpb.KeyValue) error {
		var r store.Revocation
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("store: decode revocation %s: %w", kv.Key, err)
		}
		if r.NotAfter.After(now) {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// ReplayKey implements store.Store.
func (s *Store) ReplayKey(ctx context.Context, key string) (string, error) {
	kv, err := s.get(ctx, s.k.once(key))
	if err != nil {
		return "", err
	}
	if kv == nil {
		return "", store.ErrNotFound
	}
	return string(kv.Value), nil
}

// DeleteReplayKey implements store.Store.
func (s *Store) DeleteReplayKey(ctx context.Context, key string) error {
	k := s.k.once(key)
	return s.write(ctx, &op{keys: []string{k}, writes: 1, bytes: len(k), apply: func(b *batch) error {
		if _, ok, err := b.get(k); err != nil {
			return err
		} else if !ok {
			return refuse(store.ErrNotFound)
		}
		b.del(k)
		return nil
	}})
}

// CreateJoinTokens implements store.Store. The tokens are created in
// transactions of at most --max-txn-ops/2 tokens each (a request may hold
// 100,000); should one of them find a duplicate, the tokens the earlier
// ones created are deleted again before ErrDuplicateToken is returned.
// Token hashes are SHA-256 of 256 random bits, so this only happens when
// a caller repeats a request.
func (s *Store) CreateJoinTokens(ctx context.Context, toks []store.JoinToken) error {
	vals := make([][]byte, len(toks))
	seen := make(map[string]bool, len(toks))
	dup := false
	for i := range toks {
		if len(toks[i].Hash) == 0 {
			return errors.New("store: join token without hash")
		}
		v, err := json.Marshal(&toks[i])
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		vals[i] = v
		dup = dup || seen[string(toks[i].Hash)]
		seen[string(toks[i].Hash)] = true
	}
	if dup {
		return store.ErrDuplicateToken
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	per := max(s.maxOps/2, 1)
	var done []store.JoinToken
	undo := func() {
		for chunk := range slices.Chunk(done, per) {
			dels := make([]clientv3.Op, 0, 2*len(chunk))
			for _, t := range chunk {
				dels = append(dels, clientv3.OpDelete(s.k.token(t.Hash)), clientv3.OpDelete(s.k.tokenExpiry(t.ExpiresAt, t.Hash)))
			}
			rctx, cancel := s.reqCtx(context.WithoutCancel(ctx))
			_, _ = s.cli.Txn(rctx).Then(dels...).Commit()
			cancel()
		}
	}
	for start := 0; start < len(toks); start += per {
		chunk := toks[start:min(start+per, len(toks))]
		cmps := make([]clientv3.Cmp, len(chunk))
		puts := make([]clientv3.Op, 0, 2*len(chunk))
		for i, t := range chunk {
			k := s.k.token(t.Hash)
			cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
			puts = append(puts, clientv3.OpPut(k, string(vals[start+i])),
				clientv3.OpPut(s.k.tokenExpiry(t.ExpiresAt, t.Hash), hex.EncodeToString(t.Hash)))
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil {
			undo()
			return s.wrap(err)
		}
		if !resp.Succeeded {
			undo()
			return store.ErrDuplicateToken
		}
		done = append(done, chunk...)
	}
	return nil
}

// JoinToken implements store.Store.
func (s *Store) JoinToken(ctx context.Context, hash []byte) (*store.JoinToken, error) {
	if len(hash) == 0 {
		return nil, store.ErrNotFound
	}
	// Served by the member the client talks to, without a round of the
	// cluster: it may lag, so a token it does not hold yet is read again
	// linearizably (store.Store's JoinToken allows a stale record).
	kv, err := s.get(ctx, s.k.token(hash), clientv3.WithSerializable())
	if err == nil && kv == nil {
		kv, err = s.get(ctx, s.k.token(hash))
	}
	if err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, store.ErrNotFound
	}
	// The issuance that follows (join token attestation) uses what was
	// read as its hint, instead of reading the token again.
	s.tokenHints.put(kv)
	var t store.JoinToken
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return nil, fmt.Errorf("store: decode join token: %w", err)
	}
	return &t, nil
}
