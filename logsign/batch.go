package logsign

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// BatchSigner signs the tree head of each batch a store appends to the
// log, in the batch's own transaction: it is the store's option
// (etcd.Options.TreeHeads), made before the store is opened, and the
// Signer made with it (Options.Batches) publishes the tree heads it keeps
// and gives them to the batches' receipts. The new log state and its
// signed tree head are then committed together, so a replica needs no
// round of its own to publish a tree head, no two replicas race to
// publish one, and every size the log passes through has exactly one
// tree head. A BatchSigner serves one Signer.
type BatchSigner struct {
	key   *translog.Signer
	now   func() time.Time
	log   *slog.Logger
	heads heads
}

// NewBatchSigner returns a BatchSigner signing with key; log nil discards.
func NewBatchSigner(key *translog.Signer, log *slog.Logger) *BatchSigner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BatchSigner{key: key, now: time.Now, log: log}
}

// SignTreeHead signs the tree head of the log state st, a batch's, with a
// timestamp of at least minTimestamp (milliseconds since the Unix epoch).
func (b *BatchSigner) SignTreeHead(st translog.State, minTimestamp uint64) (*ct.SignedTreeHead, error) {
	sth, err := b.key.Sign(st, max(uint64(b.now().UnixMilli()), minTimestamp))
	if err != nil {
		b.log.Error("signing the issuance log's tree head", "tree_size", st.Size(), "err", err)
	}
	return sth, err
}

// TreeHeadCommitted takes the tree head of a batch once the batch is
// committed, before any of its writers is answered: it is published
// unless a larger one is, and kept for the batch's receipts.
func (b *BatchSigner) TreeHeadCommitted(sth *ct.SignedTreeHead) {
	r, err := newRound(sth)
	if err != nil {
		b.log.Error("publishing the issuance log's tree head", "tree_size", sth.TreeSize, "err", err)
		return
	}
	r.stored = true
	b.heads.adopt(r, true)
}

// maxRecent bounds heads.recent.
const maxRecent = 64

// heads are the published tree heads: the latest, and the recent ones of
// this replica's own batches.
type heads struct {
	mu  sync.Mutex
	cur *round // nil until the Signer publishes its first
	// recent are the last tree heads signed in this replica's commits
	// (BatchSigner), smallest first: a receipt uses the smallest that
	// covers its entry, whose proof needs only the nodes its batch
	// wrote and the tree's border before it (cached by the store).
	recent []*round
}

func (h *heads) current() *round {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// adopt publishes r, a tree head the store holds, unless the latest
// published one is as large. own is set for the tree head of a batch this
// replica just committed: it is kept for the batch's receipts (recent)
// even when a larger tree head is published already.
func (h *heads) adopt(r *round, own bool) {
	h.mu.Lock()
	if own {
		i, found := slices.BinarySearchFunc(h.recent, r.sth.TreeSize, bySize)
		if !found {
			h.recent = slices.Insert(h.recent, i, r)
			if len(h.recent) > maxRecent {
				h.recent = slices.Delete(h.recent, 0, len(h.recent)-maxRecent)
			}
		}
	}
	old := h.cur
	if old != nil && r.sth.TreeSize <= old.sth.TreeSize {
		h.mu.Unlock()
		return
	}
	h.cur = r
	h.mu.Unlock()
	if old != nil {
		close(old.done)
	}
}

// settle publishes the outcome of a signer round that started when cur
// was published: r, or cur again with err. A tree head adopted meanwhile
// (a commit of this replica, another replica's through Offer) may be
// larger than what the round signed: the published tree head never goes
// back.
func (h *heads) settle(cur, r *round, err error) {
	h.mu.Lock()
	old := h.cur
	switch {
	case err != nil:
		r = &round{sth: old.sth, resp: old.resp, body: old.body, err: err, done: make(chan struct{}), stored: old.stored}
	case old != cur && r.sth.TreeSize <= old.sth.TreeSize:
		h.mu.Unlock()
		return
	}
	h.cur = r
	h.mu.Unlock()
	close(old.done)
}

func bySize(r *round, size uint64) int { return cmp.Compare(r.sth.TreeSize, size) }

// own returns the smallest recent tree head of this replica's own batches
// that covers size entries, or nil.
func (h *heads) own(size uint64) *round {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, _ := slices.BinarySearchFunc(h.recent, size, bySize)
	if i < len(h.recent) {
		return h.recent[i]
	}
	return nil
}
