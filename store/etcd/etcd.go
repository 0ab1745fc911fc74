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
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
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
