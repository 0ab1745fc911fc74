package etcd

// Import: a CA's whole state moved into a new prefix (agentca migrate, from
// a bbolt file). The prefix is marked (P/migrating) before the first key is
// written, and the mark stays until the caller, having checked the copy,
// calls FinishImport: a store refuses to open a marked prefix, so no
// replica ever serves half a migration, or one that failed its audit.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (k keys) migrating() string { return k.p + "/migrating" }

// ImportStats counts what Import wrote.
type ImportStats struct {
	Certificates, Revoked, JoinTokens, ReplayKeys, Tasks, LogEntries int
	Anchors, TreeHead                                                bool
}

// ErrNotEmpty is Import's error for a prefix that already holds a CA.
var ErrNotEmpty = errors.New("store: etcd: the prefix is not empty")

// Import copies everything src holds into the store's prefix, which must
// hold nothing but what Open writes on a new prefix. Tree nodes and the
// log state are computed from the entries; a saved tree head that the
// copied log contradicts fails the import. The prefix stays marked, and
// cannot be opened, until FinishImport; on failure it stays so: delete it
// (etcdctl del --prefix P/) and import again. This store (already open)
// reads the copy meanwhile.
func (s *Store) Import(ctx context.Context, src store.Exporter) (ImportStats, error) {
	var st ImportStats
	if s.isClosed() {
		return st, store.ErrClosed
	}
	stateRev, err := s.markImport(ctx)
	if err != nil {
		return st, err
	}
	im := &importer{s: s, w: &importWriter{s: s, ctx: ctx}, stats: &st}
	err = src.Export(ctx, im.item)
	if err == nil {
		err = im.flushLeaves()
	}
	if err == nil {
		err = im.w.flush()
	}
	if err != nil {
		return st, fmt.Errorf("import into %s (the prefix stays marked %s; delete the prefix before importing again): %w", s.k.p, s.k.migrating(), err)
	}
	if err := s.finishImport(ctx, im.state, im.sth, stateRev); err != nil {
		return st, err
	}
	st.TreeHead = im.sth != nil
	return st, nil
}

// markImport checks that the prefix is new (its schema and an empty log
// state, nothing else) and marks it as being imported into, returning
// the log state's revision, which the import's last transaction compares.
func (s *Store) markImport(ctx context.Context) (int64, error) {
	rctx, cancel := s.reqCtx(ctx)
	// A new prefix holds two keys (schema, log state): a few keys tell.
	resp, err := s.cli.Get(rctx, s.k.p+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(4))
	cancel()
	if err != nil {
		return 0, s.wrap(err)
	}
	var stateRev int64
	for _, kv := range resp.Kvs {
		switch string(kv.Key) {
		case s.k.schema():
		case s.k.logState():
			stateRev = kv.ModRevision
		default:
			return 0, fmt.Errorf("%w: %s holds %s (import only into a new prefix)", ErrNotEmpty, s.k.p, kv.Key)
		}
	}
	cur, err := s.LogState(ctx)
	if err != nil {
		return 0, err
	}
	if cur.Size() != 0 || stateRev == 0 {
		return 0, fmt.Errorf("%w: %s: its issuance log is not new", ErrNotEmpty, s.k.p)
	}
	rctx, cancel = s.reqCtx(ctx)
	tr, err := s.cli.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(s.k.logState()), "=", stateRev),
		clientv3.Compare(clientv3.CreateRevision(s.k.migrating()), "=", 0)).
		Then(clientv3.OpPut(s.k.migrating(), time.Now().UTC().Format(time.RFC3339))).Commit()
	cancel()
	if err != nil {
		return 0, s.wrap(err)
	}
	if !tr.Succeeded {
		return 0, fmt.Errorf("%w: %s changed while the import started", ErrNotEmpty, s.k.p)
	}
	// This import's mark: its writes go in only while the mark is this
	// one (not another import's, after the prefix was deleted).
	s.importRev.Store(tr.Header.Revision)
	return stateRev, nil
}

// importer writes the exported items into the prefix, appending the log
// entries to the tree as it goes.
type importer struct {
	s      *Store
	w      *importWriter
	stats  *ImportStats
	state  translog.State
	leaves [][]byte
	sth    *ct.SignedTreeHead
}

// flushLeaves appends the entries gathered to the tree, writing the nodes
// they fix.
func (im *importer) flushLeaves() error {
	if len(im.leaves) == 0 {
		return nil
	}
	next, err := im.state.Append(im.leaves, func(id compact.NodeID, hash []byte) error {
		return im.w.put(im.s.k.node(id), hash)
	})
	if err != nil {
		return fmt.Errorf("issuance log: %w", err)
	}
	im.state, im.leaves = next, im.leaves[:0]
	return nil
}

// item writes one exported item.
func (im *importer) item(it store.Item) error {
	s, w, st := im.s, im.w, im.stats
	switch {
	case it.Certificate != nil:
		return im.certificate(it.Certificate)
	case it.JoinToken != nil:
		t := it.JoinToken
		if len(t.Hash) == 0 {
			return errors.New("store: a join token without its hash")
		}
		v, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if err := w.put(s.k.token(t.Hash), v); err != nil {
			return err
		}
		st.JoinTokens++
		return w.put(s.k.tokenExpiry(t.ExpiresAt, t.Hash), []byte(hex.EncodeToString(t.Hash)))
	case it.ReplayKey != "":
		st.ReplayKeys++
		return w.put(s.k.once(it.ReplayKey), []byte(it.ReplaySerial))
	case it.Task != "":
		st.Tasks++
		return w.put(s.k.taskEnded(it.Task), []byte(it.TaskEndedAt.UTC().Format(time.RFC3339Nano)))
	case it.Anchors != nil:
		v, err := json.Marshal(it.Anchors)
		if err != nil {
			return err
		}
		st.Anchors = true
		return w.put(s.k.anchors(), v)
	case it.Workloads != nil:
		v, err := json.Marshal(it.Workloads)
		if err != nil {
			return err
		}
		return w.put(s.k.workloads(), v)
	case it.LogEntry != nil:
		i := im.state.Size() + uint64(len(im.leaves))
		h := rfc6962.DefaultHasher.HashLeaf(it.LogEntry)
		if err := w.put(s.k.logEntry(i), it.LogEntry); err != nil {
			return err
		}
		if err := w.put(s.k.logHash(h), indexBytes(i)); err != nil {
			return err
		}
		st.LogEntries++
		im.leaves = append(im.leaves, h)
		if len(im.leaves) >= 1024 {
			return im.flushLeaves()
		}
	case it.TreeHead != nil:
		im.sth = it.TreeHead
	}
	return nil
}

// certificate writes one certificate record with its expiry entry, its
// renewal link and, when revoked, its revocation.
func (im *importer) certificate(c *store.Certificate) error {
	s, w, st := im.s, im.w, im.stats
	sn, err := store.NormalizeSerial(c.Serial)
	if err != nil {
		return err
	}
	c.Serial = sn
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	exp, err := json.Marshal(&expiryEntry{Serial: sn, IssuerSKI: c.IssuerSKI, Provisioner: c.Provisioner, NotAfter: c.NotAfter})
	if err != nil {
		return err
	}
	if err := w.put(s.k.cert(sn), v); err != nil {
		return err
	}
	if err := w.put(s.k.certExpiry(c.NotAfter, sn), exp); err != nil {
		return err
	}
	if err := s.importRenewal(w.put, c); err != nil {
		return err
	}
	st.Certificates++
	if c.RevokedAt.IsZero() {
		return nil
	}
	rv, err := json.Marshal(&store.Revocation{Serial: sn, RevokedAt: c.RevokedAt, Reason: c.RevocationReason, NotAfter: c.NotAfter})
	if err != nil {
		return err
	}
	st.Revoked++
	return w.put(s.k.rev(strings.ToLower(c.IssuerSKI), sn), rv)
}

// finishImport writes, last, the log state, the tree head (checked
// against the copied tree) and the mark's removal, in one transaction.
func (s *Store) finishImport(ctx context.Context, state translog.State, sth *ct.SignedTreeHead, stateRev int64) error {
	v, err := state.MarshalBinary()
	if err != nil {
		return err
	}
	last := []clientv3.Op{clientv3.OpPut(s.k.logState(), string(v))}
	if sth != nil {
		if err := s.checkRoot(ctx, state, sth); err != nil {
			return fmt.Errorf("import into %s: the saved tree head does not match the copied log (the prefix stays marked): %w", s.k.p, err)
		}
		b, err := json.Marshal(sth)
		if err != nil {
			return err
		}
		last = append(last, clientv3.OpPut(s.k.logSTH(), string(b)))
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	tr, err := s.cli.Txn(rctx).If(s.ownMark(),
		clientv3.Compare(clientv3.ModRevision(s.k.logState()), "=", stateRev)).Then(last...).Commit()
	if err != nil {
		return s.wrap(err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("import into %s: the prefix changed during the import (its mark was removed or replaced)", s.k.p)
	}
	s.lastState.Store(&state)
	return nil
}

// ownMark compares the prefix's mark with the one this store's Import
// wrote.
func (s *Store) ownMark() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.k.migrating()), "=", s.importRev.Load())
}

// FinishImport removes the mark of the Import this store made, so that
// replicas open the prefix.
func (s *Store) FinishImport(ctx context.Context) error {
	if s.importRev.Load() == 0 {
		return errors.New("store: etcd: no import to finish")
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	tr, err := s.cli.Txn(rctx).If(s.ownMark()).Then(clientv3.OpDelete(s.k.migrating())).Commit()
	if err != nil {
		return s.wrap(err)
	}
	if !tr.Succeeded {
		return fmt.Errorf("store: etcd: %s: the import's mark was removed or replaced meanwhile", s.k.p)
	}
	return nil
}

// importWriter puts keys in transactions of at most --max-txn-ops
// operations and about half etcd's request limit.
type importWriter struct {
	s     *Store
	ctx   context.Context
	ops   []clientv3.Op
	bytes int
}

func (w *importWriter) put(key string, v []byte) error {
	if len(w.ops) >= w.s.maxOps || w.bytes+len(key)+len(v) > maxTxnBytes/2 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.ops = append(w.ops, clientv3.OpPut(key, string(v)))
	w.bytes += len(key) + len(v)
	return nil
}

func (w *importWriter) flush() error {
	if len(w.ops) == 0 {
		return nil
	}
	ctx, cancel := w.s.reqCtx(w.ctx)
	defer cancel()
	// Only while the mark is there: a prefix deleted meanwhile is not
	// written to again.
	resp, err := w.s.cli.Txn(ctx).If(w.s.ownMark()).Then(w.ops...).Commit()
	if err != nil {
		return w.s.wrap(err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: etcd: the mark %s was removed or replaced during the import", w.s.k.migrating())
	}
	w.ops, w.bytes = w.ops[:0], 0
	return nil
}
