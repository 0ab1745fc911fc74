package etcd

// The commit signer (Options.TreeHeads, a TreeHeadSigner): a tree head
// signed in each batch that appends, in its transaction.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

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
