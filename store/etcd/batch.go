package etcd

// One batch of the committer: the keys its writes read, their overlay,
// the compares, and the transaction that commits them.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	b, err := s.newBatch(ops[:n], readKeys, signer, mode)
	if err != nil {
		return nil, nil, err
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

// newBatch makes prepareN's batch for ops: the values of readKeys (the
// keys of ops, and the log's) from the hints or read as mode says, the
// log head known where it is newer, and the log's state.
func (s *Store) newBatch(ops []*op, readKeys []string, signer TreeHeadSigner, mode readMode) (*batch, error) {
	snap := s.hinted(ops, signer != nil, mode)
	if snap == nil {
		s.reads.Add(1)
		var err error
		snap, err = s.readKeys(readKeys, mode == readLinear)
		if err != nil {
			return nil, err
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
			return nil, fmt.Errorf("store: etcd: log state: %w", err)
		}
		b.stateRev = kv.ModRevision
	}
	return b, nil
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

type cachedNode struct {
	id   compact.NodeID
	hash []byte
}
