package etcd

// The issuance log's reads, and its tree heads.
//
// Tree heads and replicas: every replica signs tree heads with the same
// log key, but ECDSA signatures are randomised and the timestamps differ,
// so two replicas signing the same tree would publish two different tree
// heads for one size. PublishTreeHead makes them converge: the key
// P/log/sth only ever moves to a larger size (compare-and-swap on its mod
// revision), and a replica whose freshly signed tree head is not larger
// than the stored one publishes the stored one instead of its own. So the
// first tree head stored for a size wins, and for each size at most one
// tree head is ever published by any replica.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func indexBytes(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// Nodes implements translog.NodeReader (store.Log): from the node cache,
// and for the others one read transaction per --max-txn-ops nodes.
func (s *Store) Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	out := make([][]byte, len(ids))
	if s.nodes.get(ids, out) == 0 {
		return out, nil
	}
	var miss []int // indices in ids of the nodes to read
	for i, h := range out {
		if h == nil {
			miss = append(miss, i)
		}
	}
	buf := make([]byte, len(miss)*32)
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	n := 0
	for chunk := range slices.Chunk(miss, s.maxOps) {
		gets := make([]clientv3.Op, len(chunk))
		for j, i := range chunk {
			gets[j] = clientv3.OpGet(s.k.node(ids[i]))
		}
		resp, err := s.cli.Txn(rctx).Then(gets...).Commit()
		if err != nil {
			return nil, s.wrap(err)
		}
		for j, r := range resp.Responses {
			id := ids[chunk[j]]
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 || len(kvs[0].Value) != 32 {
				return nil, fmt.Errorf("store: %w: level %d index %d", translog.ErrNodeNotFound, id.Level, id.Index)
			}
			h := buf[n*32 : (n+1)*32 : (n+1)*32]
			copy(h, kvs[0].Value)
			out[chunk[j]] = h
			s.nodes.add(id, h)
			n++
		}
	}
	return out, nil
}

func decodeState(kv *mvccpb.KeyValue) (translog.State, error) {
	var st translog.State
	if kv == nil {
		return st, nil
	}
	if err := st.UnmarshalBinary(kv.Value); err != nil {
		return st, fmt.Errorf("store: log state: %w", err)
	}
	return st, nil
}

// LogState implements store.Log. The state read is kept (lastState), so
// that PublishTreeHead can check a tree head signed over it without
// reading it again.
func (s *Store) LogState(ctx context.Context) (translog.State, error) {
	kv, err := s.get(ctx, s.k.logState())
	if err != nil {
		return translog.State{}, err
	}
	st, err := decodeState(kv)
	if err == nil {
		s.lastState.Store(&st)
	}
	return st, err
}

// LogEntries implements store.Log.
func (s *Store) LogEntries(ctx context.Context, start, end uint64) ([][]byte, error) {
	st, err := s.LogState(ctx)
	if err != nil {
		return nil, err
	}
	end = min(end, st.Size())
	if start >= end {
		return nil, nil
	}
	out := make([][]byte, 0, end-start)
	want := start
	err = s.rangeAll(ctx, s.k.logEntry(start), s.k.logEntry(end), func(kv *mvccpb.KeyValue) error {
		if string(kv.Key) != s.k.logEntry(want) {
			return fmt.Errorf("store: log entry %d is missing", want)
		}
		out = append(out, kv.Value)
		want++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if want != end {
		return nil, fmt.Errorf("store: log entry %d is missing", want)
	}
	return out, nil
}

// LogIndex implements store.Log.
func (s *Store) LogIndex(ctx context.Context, leafHash []byte) (uint64, error) {
	if len(leafHash) == 0 {
		return 0, store.ErrNotFound
	}
	kv, err := s.get(ctx, s.k.logHash(leafHash))
	if err != nil {
		return 0, err
	}
	if kv == nil {
		return 0, store.ErrNotFound
	}
	if len(kv.Value) != 8 {
		return 0, fmt.Errorf("store: log index of leaf %x has %d bytes", leafHash, len(kv.Value))
	}
	return binary.BigEndian.Uint64(kv.Value), nil
}

func decodeSTH(kv *mvccpb.KeyValue) (*ct.SignedTreeHead, error) {
	if kv == nil {
		return nil, store.ErrNotFound
	}
	var sth ct.SignedTreeHead
	if err := json.Unmarshal(kv.Value, &sth); err != nil {
		return nil, fmt.Errorf("store: decode signed tree head: %w", err)
	}
	return &sth, nil
}

// TreeHead implements store.Log.
func (s *Store) TreeHead(ctx context.Context) (*ct.SignedTreeHead, error) {
	kv, err := s.get(ctx, s.k.logSTH())
	if err != nil {
		return nil, err
	}
	return decodeSTH(kv)
}

// readHead reads the log state and the saved tree head in one
// transaction.
func (s *Store) readHead(ctx context.Context) (translog.State, *mvccpb.KeyValue, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	if s.isClosed() {
		return translog.State{}, nil, store.ErrClosed
	}
	resp, err := s.cli.Txn(rctx).Then(clientv3.OpGet(s.k.logState()), clientv3.OpGet(s.k.logSTH())).Commit()
	if err != nil {
		return translog.State{}, nil, s.wrap(err)
	}
	var kvs [2]*mvccpb.KeyValue
	for i, r := range resp.Responses {
		if k := r.GetResponseRange().Kvs; len(k) > 0 {
			kvs[i] = k[0]
		}
	}
	st, err := decodeState(kvs[0])
	return st, kvs[1], err
}

// checkRoot refuses a tree head that the stored tree contradicts.
func (s *Store) checkRoot(ctx context.Context, st translog.State, sth *ct.SignedTreeHead) error {
	if sth.TreeSize > st.Size() {
		return fmt.Errorf("%w: size %d, the log has %d entries", store.ErrTreeHead, sth.TreeSize, st.Size())
	}
	root := st.Root()
	if sth.TreeSize < st.Size() {
		var err error
		if root, err = translog.RootAt(ctx, s, sth.TreeSize); err != nil {
			return err
		}
	}
	if !bytes.Equal(root, sth.SHA256RootHash[:]) {
		return fmt.Errorf("%w: root %x at size %d, the stored tree's is %x", store.ErrTreeHead, sth.SHA256RootHash[:], sth.TreeSize, root)
	}
	return nil
}

// putIfUnchanged stores sth unless the tree head key moved from rev.
func (s *Store) putIfUnchanged(ctx context.Context, rev int64, sth *ct.SignedTreeHead) (bool, error) {
	v, err := json.Marshal(sth)
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(s.k.logSTH()), "=", rev)).
		Then(clientv3.OpPut(s.k.logSTH(), string(v))).Commit()
	if err != nil {
		return false, s.wrap(err)
	}
	return resp.Succeeded, nil
}

// SaveTreeHead implements store.TreeHeadSaver, with store/bolt's checks: besides the
// sizes, the tree head's root must be the stored tree's at its size.
func (s *Store) SaveTreeHead(ctx context.Context, sth *ct.SignedTreeHead) error {
	for attempt := 0; attempt < 100; attempt++ {
		st, kv, err := s.readHead(ctx)
		if err != nil {
			return err
		}
		var rev int64
		if kv != nil {
			rev = kv.ModRevision
			prev, err := decodeSTH(kv)
			if err != nil {
				return err
			}
			switch {
			case sth.TreeSize < prev.TreeSize:
				return fmt.Errorf("%w: size %d is below the saved tree head's %d", store.ErrTreeHead, sth.TreeSize, prev.TreeSize)
			case sth.TreeSize == prev.TreeSize && sth.Timestamp < prev.Timestamp:
				return fmt.Errorf("%w: timestamp %d is before the saved tree head's %d", store.ErrTreeHead, sth.Timestamp, prev.Timestamp)
			}
		}
		if err := s.checkRoot(ctx, st, sth); err != nil {
			return err
		}
		ok, err := s.putIfUnchanged(ctx, rev, sth)
		if err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("%w: etcd: the tree head keeps changing", store.ErrUnavailable)
}

// PublishTreeHead implements store.TreeHeadPublisher: sth is stored when
// it is larger than the stored tree head, which is returned otherwise.
//
// It costs one transaction in the common case: the compare-and-swap is
// made against the tree head last seen (the transaction's else branch
// reads the stored one when another replica moved it since; a tree head
// last seen at sth's size or larger is returned at once, as the key only
// grows), and the root is checked against the log state LogState last
// read when sth is of that size (the signer signs what it just read);
// otherwise the stored tree is read.
func (s *Store) PublishTreeHead(ctx context.Context, sth *ct.SignedTreeHead) (*ct.SignedTreeHead, error) {
	if last := s.lastState.Load(); last != nil && last.Size() == sth.TreeSize {
		if !bytes.Equal(last.Root(), sth.SHA256RootHash[:]) {
			return nil, fmt.Errorf("%w: root %x at size %d, the stored tree's is %x", store.ErrTreeHead, sth.SHA256RootHash[:], sth.TreeSize, last.Root())
		}
	} else {
		st, _, err := s.readHead(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.checkRoot(ctx, st, sth); err != nil {
			return nil, err
		}
	}
	v, err := json.Marshal(sth)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var rev int64
	if seen := s.seenSTH.Load(); seen != nil {
		if seen.sth.TreeSize >= sth.TreeSize {
			// Stored once, for a size at least sth's: the key has
			// not moved below it since.
			return seen.sth, nil
		}
		if err := laterTimestamp(seen.sth, sth); err != nil {
			return nil, err
		}
		rev = seen.rev
	}
	for attempt := 0; attempt < 100; attempt++ {
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(s.k.logSTH()), "=", rev)).
			Then(clientv3.OpPut(s.k.logSTH(), string(v))).Else(clientv3.OpGet(s.k.logSTH())).Commit()
		cancel()
		if err != nil {
			return nil, s.wrap(err)
		}
		if resp.Succeeded {
			s.seenSTH.Store(&seenSTH{rev: resp.Header.Revision, sth: sth})
			return sth, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			rev = 0
			continue
		}
		prev, err := decodeSTH(kvs[0])
		if err != nil {
			return nil, err
		}
		s.seenSTH.Store(&seenSTH{rev: kvs[0].ModRevision, sth: prev})
		if prev.TreeSize >= sth.TreeSize {
			return prev, nil
		}
		if err := laterTimestamp(prev, sth); err != nil {
			return nil, err
		}
		rev = kvs[0].ModRevision
	}
	return nil, errors.New("store: etcd: the tree head keeps changing")
}

// laterTimestamp refuses a tree head, larger than the stored prev, that
// is timestamped before it (its replica's clock is behind): the tree
// heads served would go back in time.
func laterTimestamp(prev, sth *ct.SignedTreeHead) error {
	if sth.Timestamp < prev.Timestamp {
		return fmt.Errorf("%w: timestamp %d is before the stored tree head's %d (size %d): sign again with a timestamp at least that one",
			store.ErrTreeHead, sth.Timestamp, prev.Timestamp, prev.TreeSize)
	}
	return nil
}

// seenSTH is the tree head key as PublishTreeHead last saw it.
type seenSTH struct {
	rev int64
	sth *ct.SignedTreeHead
}
