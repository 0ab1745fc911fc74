package bolt

// The issuance log's data in the bbolt file:
//
//	log_entries  index (8 bytes, big-endian)            → leaf input (TLS MerkleTreeLeaf)
//	log_index    leaf hash (32 bytes)                   → index (8 bytes, big-endian)
//	log_nodes    level (1 byte) ‖ index (8 bytes, BE)   → node hash (32 bytes)
//	meta         "log_state"                            → translog.State.MarshalBinary
//	meta         "log_sth"                              → the last signed tree head (JSON)
//
// Entries, index and nodes are only ever added (a node's hash never
// changes once written); the state key is rewritten by each append: one
// per committed batch. All of it is written inside the transaction that
// records the certificates.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	bbolt "go.etcd.io/bbolt"
)

var (
	bucketLogEntries = []byte("log_entries")
	bucketLogIndex   = []byte("log_index")
	bucketLogNodes   = []byte("log_nodes")
	keyLogState      = []byte("log_state")
	keyLogSTH        = []byte("log_sth")
)

func indexKey(i uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, i)
	return k
}

func nodeKey(id compact.NodeID) []byte {
	k := make([]byte, 9)
	k[0] = byte(id.Level)
	binary.BigEndian.PutUint64(k[1:], id.Index)
	return k
}

// readState decodes the log's state in tx; a missing key is the empty
// tree. It is read afresh by every append: a batch's appends each see the
// state the previous one wrote, and a retried write sees the committed one.
func readState(tx *bbolt.Tx) (translog.State, error) {
	var st translog.State
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return st, nil
	}
	v := meta.Get(keyLogState)
	if v == nil {
		return st, nil
	}
	if err := st.UnmarshalBinary(v); err != nil {
		return st, fmt.Errorf("log state: %w", err)
	}
	return st, nil
}

// logBatch is the log's side of one transaction of the committer: the
// writes of the batch each add a leaf (entry and hash index at once), and
// flush appends all their hashes to the tree in one go, writing the nodes
// this fixes and the new state. It is reset at the start of every
// attempt, so a write retried alone reads the committed state afresh.
type logBatch struct {
	state  translog.State
	loaded bool
	hashes [][]byte
}

// next returns the index the next leaf of the batch gets.
func (b *logBatch) next(tx *bbolt.Tx) (uint64, error) {
	if !b.loaded {
		st, err := readState(tx)
		if err != nil {
			return 0, err
		}
		b.state, b.loaded = st, true
	}
	return b.state.Size() + uint64(len(b.hashes)), nil
}

// add writes leaf's entry at index (from next) and its hash index.
func (b *logBatch) add(tx *bbolt.Tx, index uint64, leaf *translog.Leaf) error {
	if want, err := b.next(tx); err != nil || index != want {
		return fmt.Errorf("log leaf for index %d added at %d (%v)", index, want, err)
	}
	entries := tx.Bucket(bucketLogEntries)
	entries.FillPercent = 1 // keys only ever grow: pack the pages
	if err := entries.Put(indexKey(index), leaf.Input); err != nil {
		return err
	}
	if err := tx.Bucket(bucketLogIndex).Put(leaf.Hash, indexKey(index)); err != nil {
		return err
	}
	b.hashes = append(b.hashes, leaf.Hash)
	return nil
}

// flush appends the batch's leaf hashes to the tree.
func (b *logBatch) flush(tx *bbolt.Tx) error {
	if len(b.hashes) == 0 {
		return nil
	}
	nodes := tx.Bucket(bucketLogNodes)
	nodes.FillPercent = 0.9 // each level only grows at its end
	next, err := b.state.Append(b.hashes, func(id compact.NodeID, hash []byte) error {
		return nodes.Put(nodeKey(id), hash)
	})
	if err != nil {
		return err
	}
	v, err := next.MarshalBinary()
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyLogState, v)
}

// appendLeaves appends leaves, in order, to the log in tx through a
// logBatch: for the upgrade of an old file and for bulk loads.
func appendLeaves(tx *bbolt.Tx, leaves []*translog.Leaf) error {
	var b logBatch
	for _, l := range leaves {
		i, err := b.next(tx)
		if err != nil {
			return err
		}
		if err := b.add(tx, i, l); err != nil {
			return err
		}
	}
	return b.flush(tx)
}

// withLogFields adds "log_index" and "log_timestamp" to a certificate
// record's JSON encoding (made before the transaction, with both fields
// zero and so omitted), so that the committer does not encode records. It
// appends in rec's spare capacity when there is enough (Issue reserves
// it): rec keeps its length, and a retried write, in a new transaction,
// overwrites the same bytes.
func withLogFields(rec []byte, index, timestamp uint64) []byte {
	out := rec[:len(rec)-1] // drop the closing brace
	out = append(out, `,"log_index":`...)
	out = strconv.AppendUint(out, index, 10)
	out = append(out, `,"log_timestamp":`...)
	out = strconv.AppendUint(out, timestamp, 10)
	return append(out, '}')
}

// logFieldsRoom is the most withLogFields adds.
const logFieldsRoom = len(`,"log_index":,"log_timestamp":`) + 2*20

// backfillLog appends every certificate recorded before the store kept a
// log (a state directory older than the issuance log), oldest first, with
// timestamp now, and writes the state. It runs once, in Open, when the
// log state key is absent.
func backfillLog(tx *bbolt.Tx, now time.Time) error {
	type old struct {
		key []byte
		rec store.Certificate
	}
	var recs []old
	err := tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
		var c store.Certificate
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decode certificate %x: %w", k, err)
		}
		recs = append(recs, old{append([]byte(nil), k...), c})
		return nil
	})
	if err != nil {
		return err
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].rec.NotBefore.Before(recs[j].rec.NotBefore) })
	ts := uint64(now.UnixMilli())
	leaves := make([]*translog.Leaf, len(recs))
	certs := tx.Bucket(bucketCerts)
	for i := range recs {
		l, err := translog.NewLeaf(recs[i].rec.DER, ts)
		if err != nil {
			return fmt.Errorf("certificate %x: %w", recs[i].key, err)
		}
		leaves[i] = l
		recs[i].rec.LogIndex, recs[i].rec.LogTimestamp = uint64(i), ts
		v, err := json.Marshal(&recs[i].rec)
		if err != nil {
			return err
		}
		if err := certs.Put(recs[i].key, v); err != nil {
			return err
		}
	}
	if len(leaves) == 0 {
		// Mark the log as started, so that a record issued later
		// without its leaf is reported by the audit, never logged
		// silently by an open.
		v, err := translog.State{}.MarshalBinary()
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyLogState, v)
	}
	return appendLeaves(tx, leaves)
}

// txNodes reads nodes inside a transaction.
type txNodes struct{ tx *bbolt.Tx }

func (t txNodes) Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	b := t.tx.Bucket(bucketLogNodes)
	buf := make([]byte, len(ids)*32)
	out := make([][]byte, len(ids))
	for i, id := range ids {
		var v []byte
		if b != nil {
			v = b.Get(nodeKey(id))
		}
		if len(v) != 32 {
			return nil, fmt.Errorf("store: %w: level %d index %d", translog.ErrNodeNotFound, id.Level, id.Index)
		}
		h := buf[i*32 : (i+1)*32 : (i+1)*32]
		copy(h, v)
		out[i] = h
	}
	return out, nil
}

// Nodes implements translog.NodeReader (store.Log).
func (s *Store) Nodes(ctx context.Context, ids []compact.NodeID) ([][]byte, error) {
	var out [][]byte
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		out, err = txNodes{tx}.Nodes(ctx, ids)
		return err
	})
	if err != nil {
		if errors.Is(err, translog.ErrNodeNotFound) {
			return nil, err
		}
		return nil, wrap(err)
	}
	return out, nil
}

// LogState implements store.Log.
func (s *Store) LogState(ctx context.Context) (translog.State, error) {
	var st translog.State
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		st, err = readState(tx)
		return err
	})
	return st, wrap(err)
}

// LogEntries implements store.Log.
func (s *Store) LogEntries(ctx context.Context, start, end uint64) ([][]byte, error) {
	var out [][]byte
	err := s.view(func(tx *bbolt.Tx) error {
		st, err := readState(tx)
		if err != nil {
			return err
		}
		end = min(end, st.Size())
		if start >= end {
			return nil
		}
		b := tx.Bucket(bucketLogEntries)
		if b == nil {
			return fmt.Errorf("log entry %d is missing", start)
		}
		out = make([][]byte, 0, end-start)
		c := b.Cursor()
		want := start
		for k, v := c.Seek(indexKey(start)); want < end; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if k == nil || !bytes.Equal(k, indexKey(want)) {
				return fmt.Errorf("log entry %d is missing", want)
			}
			out = append(out, append([]byte(nil), v...))
			want++
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// LogIndex implements store.Log.
func (s *Store) LogIndex(ctx context.Context, leafHash []byte) (uint64, error) {
	var i uint64
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogIndex)
		if b == nil || len(leafHash) == 0 {
			return store.ErrNotFound
		}
		v := b.Get(leafHash)
		if v == nil {
			return store.ErrNotFound
		}
		if len(v) != 8 {
			return fmt.Errorf("log index of leaf %x has %d bytes", leafHash, len(v))
		}
		i = binary.BigEndian.Uint64(v)
		return nil
	})
	return i, wrap(err)
}

func readTreeHead(tx *bbolt.Tx) (*ct.SignedTreeHead, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil, store.ErrNotFound
	}
	v := meta.Get(keyLogSTH)
	if v == nil {
		return nil, store.ErrNotFound
	}
	var sth ct.SignedTreeHead
	if err := json.Unmarshal(v, &sth); err != nil {
		return nil, fmt.Errorf("decode signed tree head: %w", err)
	}
	return &sth, nil
}

// TreeHead implements store.Log.
func (s *Store) TreeHead(ctx context.Context) (*ct.SignedTreeHead, error) {
	var sth *ct.SignedTreeHead
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		sth, err = readTreeHead(tx)
		return err
	})
	if err != nil {
		return nil, wrap(err)
	}
	return sth, nil
}

// SaveTreeHead implements store.TreeHeadSaver. Besides the sizes, it checks that the
// tree head's root is the root of the stored tree at its size, so the file
// never holds a tree head its own tree contradicts.
func (s *Store) SaveTreeHead(ctx context.Context, sth *ct.SignedTreeHead) error {
	v, err := json.Marshal(sth)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.write(ctx, func(tx *bbolt.Tx) error {
		st, err := readState(tx)
		if err != nil {
			return err
		}
		if sth.TreeSize > st.Size() {
			return refuse(fmt.Errorf("%w: size %d, the log has %d entries", store.ErrTreeHead, sth.TreeSize, st.Size()))
		}
		prev, err := readTreeHead(tx)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case sth.TreeSize < prev.TreeSize:
			return refuse(fmt.Errorf("%w: size %d is below the saved tree head's %d", store.ErrTreeHead, sth.TreeSize, prev.TreeSize))
		case sth.TreeSize == prev.TreeSize && sth.Timestamp < prev.Timestamp:
			return refuse(fmt.Errorf("%w: timestamp %d is before the saved tree head's %d", store.ErrTreeHead, sth.Timestamp, prev.Timestamp))
		}
		root, err := translog.RootAt(ctx, txNodes{tx}, sth.TreeSize)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, sth.SHA256RootHash[:]) {
			return refuse(fmt.Errorf("%w: root %x at size %d, the stored tree's is %x", store.ErrTreeHead, sth.SHA256RootHash[:], sth.TreeSize, root))
		}
		return tx.Bucket(bucketMeta).Put(keyLogSTH, v)
	})
}
