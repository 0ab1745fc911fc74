package logsign

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// Store is what the signer reads and writes of the stored log (store.Log).
// A store that also implements store.LogHeadReader or
// store.TreeHeadPublisher is used through them.
type Store interface {
	translog.NodeReader
	LogState(ctx context.Context) (translog.State, error)
	TreeHead(ctx context.Context) (*ct.SignedTreeHead, error)
	SaveTreeHead(ctx context.Context, sth *ct.SignedTreeHead) error
}

// Options configure a Signer.
type Options struct {
	// Store holds the log. Required.
	Store Store
	// Key signs tree heads with the log key. Required.
	Key *translog.Signer
	// Batches is the BatchSigner the store was opened with, if it signs
	// each batch's tree head in the batch's transaction (store/etcd):
	// its tree heads are published, and receipts use them. Its key must
	// be Key.
	Batches *BatchSigner
	// Appended receives a value after each store commit that appended
	// to the log (bolt.Options.OnLogAppend), so that every batch gets a
	// tree head, whoever issued it. Nil means tree heads are signed only
	// when a receipt needs one (Receipt, Covering).
	Appended <-chan struct{}
	// Now nil means time.Now.
	Now func() time.Time
	// Logger nil discards.
	Logger *slog.Logger
	// SaveEvery is how often, at most, the latest tree head is written
	// to the store (it is written again when Run returns); zero means
	// one second. A tree head is published before it is saved: the tree
	// it signs is already durable, so a daemon killed before saving it
	// signs a tree at least as large when it starts again.
	SaveEvery time.Duration
}

// Signer signs and publishes the issuance log's tree heads: one signature
// for each committed batch that grew the log (fewer under load: a
// signature covers every batch committed while the previous one was being
// made), each checked before it is published. Run does the signing;
// Covering waits for a tree head that includes a given entry, Receipt
// proves an entry. With a BatchSigner (Options.Batches) the store signs
// each batch's tree head in the batch's transaction; Run then only signs
// for batches whose signature failed, and Offer takes the other replicas'
// tree heads. The published tree head never goes back.
type Signer struct {
	store     Store
	key       *translog.Signer
	appended  <-chan struct{}
	now       func() time.Time
	log       *slog.Logger
	saveEvery time.Duration
	keyPEM    []byte
	kick      chan struct{}
	// heads are the published tree heads, shared with the BatchSigner.
	heads *heads

	saved *ct.SignedTreeHead // only Run (and New) touch it
}

// round is one published outcome of the signer; done is closed when the
// next one replaces it.
type round struct {
	sth  *ct.SignedTreeHead
	resp *ct.GetSTHResponse
	body []byte // get-sth JSON
	err  error
	done chan struct{}
	// stored: sth is saved in the store already (signed in a commit,
	// or by another replica).
	stored bool
}

// newRound publishes sth, with its get-sth encoding.
func newRound(sth *ct.SignedTreeHead) (*round, error) {
	r := &round{sth: sth, done: make(chan struct{})}
	var err error
	if r.resp, err = translog.STHResponse(sth); err != nil {
		return nil, err
	}
	if r.body, err = json.Marshal(r.resp); err != nil {
		return nil, err
	}
	return r, nil
}

// New checks the stored log against its last saved tree head (a mismatch
// means the store was altered: the daemon must not publish a fork), signs
// a tree head of the current tree and saves it.
func New(ctx context.Context, opts Options) (*Signer, error) {
	if opts.Store == nil || opts.Key == nil {
		return nil, errors.New("logsign: the log's Store and Key are required")
	}
	s := &Signer{store: opts.Store, key: opts.Key, appended: opts.Appended, now: opts.Now, log: opts.Logger,
		saveEvery: opts.SaveEvery, kick: make(chan struct{}, 1), heads: &heads{}}
	if b := opts.Batches; b != nil {
		if b.key != opts.Key {
			return nil, errors.New("logsign: the BatchSigner signs with another key than the log's")
		}
		s.heads = &b.heads
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.saveEvery <= 0 {
		s.saveEvery = time.Second
	}
	der, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return nil, fmt.Errorf("logsign: log key: %w", err)
	}
	s.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	st, err := s.check(ctx)
	if err != nil {
		return nil, err
	}
	var ts uint64
	if s.saved != nil {
		ts = s.saved.Timestamp
	}
	sth, err := s.key.Sign(st, max(uint64(s.now().UnixMilli()), ts))
	if err != nil {
		return nil, err
	}
	if sth, err = s.publish(ctx, sth); err != nil {
		return nil, err
	}
	r, err := newRound(sth)
	if err != nil {
		return nil, err
	}
	// A batch committed meanwhile may have published a larger one.
	s.heads.adopt(r, false)
	s.save(ctx)
	return s, nil
}

// check reads the stored log's state and checks it against the stored
// tree nodes and the saved tree head (s.saved, nil when none).
func (s *Signer) check(ctx context.Context) (translog.State, error) {
	st, prev, err := readLogHead(ctx, s.store)
	if err != nil {
		return st, err
	}
	root, err := translog.RootAt(ctx, s.store, st.Size())
	if err != nil {
		return st, fmt.Errorf("logsign: the stored log is damaged (run agentca log audit): %w", err)
	}
	if !bytes.Equal(root, st.Root()) {
		return st, fmt.Errorf("logsign: the stored tree state (size %d) contradicts the stored tree nodes: the store was altered (run agentca log audit)", st.Size())
	}
	if prev == nil {
		return st, nil
	}
	if err := translog.VerifySTH(s.key.Public(), prev); err != nil {
		return st, fmt.Errorf("logsign: the saved tree head does not verify with the log key: %w", err)
	}
	if prev.TreeSize > st.Size() {
		return st, fmt.Errorf("logsign: the saved tree head is of size %d but the log holds %d entries: the store lost entries (run agentca log audit)", prev.TreeSize, st.Size())
	}
	if root, err = translog.RootAt(ctx, s.store, prev.TreeSize); err != nil {
		return st, err
	}
	if !bytes.Equal(root, prev.SHA256RootHash[:]) {
		return st, fmt.Errorf("logsign: the stored log's root at size %d is %x, not the signed %x: the store was altered (run agentca log audit)", prev.TreeSize, root, prev.SHA256RootHash[:])
	}
	s.saved = prev
	return st, nil
}

// readLogHead reads the log's state and its saved tree head (nil when
// none) at one moment when the store can (store.LogHeadReader): on a
// store other replicas append to, two reads could see a tree head newer
// than the state and take it for a lost entry.
func readLogHead(ctx context.Context, ls Store) (translog.State, *ct.SignedTreeHead, error) {
	if hr, ok := ls.(store.LogHeadReader); ok {
		return hr.LogHead(ctx)
	}
	st, err := ls.LogState(ctx)
	if err != nil {
		return st, nil, err
	}
	prev, err := ls.TreeHead(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return st, nil, nil
	}
	return st, prev, err
}

// Offer takes a tree head another replica saved (store.ChangeTreeHead):
// it is published once checked with the log key, if it is larger than the
// latest. A nil sth (one the store could not read, or changes that may
// have been missed) makes the signer look at the stored log instead.
func (s *Signer) Offer(sth *ct.SignedTreeHead) {
	if sth == nil {
		s.cue()
		return
	}
	if sth.TreeSize <= s.heads.current().sth.TreeSize {
		return
	}
	if err := translog.VerifySTH(s.key.Public(), sth); err != nil {
		s.log.Error("a tree head saved by another replica does not verify with the log key; not served", "tree_size", sth.TreeSize, "err", err)
		return
	}
	r, err := newRound(sth)
	if err != nil {
		s.log.Error("publishing the issuance log's tree head", "tree_size", sth.TreeSize, "err", err)
		return
	}
	r.stored = true
	s.heads.adopt(r, false)
}

// cue makes Run look at the stored log, unless it is due to already.
func (s *Signer) cue() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run signs tree heads as the log grows until ctx is done, then saves the
// latest one.
func (s *Signer) Run(ctx context.Context) {
	var saveC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			s.save(sctx)
			cancel()
			return
		case <-saveC:
			saveC = nil
			s.save(ctx)
			continue
		case <-s.appended:
		case <-s.kick:
		}
		s.refresh(ctx)
		if r := s.heads.current(); saveC == nil && !r.stored && r.sth != s.saved {
			saveC = time.After(s.saveEvery)
		}
	}
}

// refresh signs the current tree when it has grown past the published
// tree head, and publishes the outcome.
func (s *Signer) refresh(ctx context.Context) {
	cur := s.heads.current()
	st, err := s.store.LogState(ctx)
	if err == nil {
		if st.Size() < cur.sth.TreeSize {
			err = fmt.Errorf("logsign: the log shrank from %d to %d entries", cur.sth.TreeSize, st.Size())
		} else if st.Size() == cur.sth.TreeSize {
			return
		}
	}
	var sth *ct.SignedTreeHead
	if err == nil {
		sth, err = s.key.Sign(st, max(uint64(s.now().UnixMilli()), cur.sth.Timestamp))
	}
	if err == nil {
		var got *ct.SignedTreeHead
		got, err = s.publish(ctx, sth)
		if errors.Is(err, store.ErrTreeHead) {
			// A replica whose clock is ahead stored a smaller tree
			// head with a later timestamp: sign again with that
			// timestamp, so published timestamps never go back.
			if prev, perr := s.store.TreeHead(ctx); perr == nil && prev.Timestamp > sth.Timestamp {
				if sth, err = s.key.Sign(st, prev.Timestamp); err == nil {
					got, err = s.publish(ctx, sth)
				}
			}
		}
		sth = got
	}
	var r *round
	if err == nil {
		r, err = newRound(sth)
	}
	if err != nil {
		s.log.Error("signing the issuance log's tree head", "err", err)
	}
	s.heads.settle(cur, r, err)
}

// publish returns the tree head to publish in place of sth, which was
// just signed. With a store shared between replicas
// (store.TreeHeadPublisher, e.g. store/etcd) that is the tree head stored
// first for sth's size, or a larger one another replica stored meanwhile
// (checked with the log key), so every replica serves the same tree head
// for a given size; it is saved already. Otherwise it is sth.
func (s *Signer) publish(ctx context.Context, sth *ct.SignedTreeHead) (*ct.SignedTreeHead, error) {
	p, ok := s.store.(store.TreeHeadPublisher)
	if !ok {
		return sth, nil
	}
	got, err := p.PublishTreeHead(ctx, sth)
	if err != nil {
		return nil, err
	}
	if got != sth {
		if err := translog.VerifySTH(s.key.Public(), got); err != nil {
			return nil, fmt.Errorf("logsign: the tree head another replica stored does not verify with the log key: %w", err)
		}
	}
	s.saved = got
	return got, nil
}

// save writes the latest tree head to the store unless it already is.
func (s *Signer) save(ctx context.Context) {
	r := s.heads.current()
	cur := r.sth
	if cur == s.saved || r.stored {
		return
	}
	if err := s.store.SaveTreeHead(ctx, cur); err != nil {
		s.log.Error("saving the issuance log's tree head", "tree_size", cur.TreeSize, "err", err)
		return
	}
	s.saved = cur
}

// Latest returns the latest signed tree head.
func (s *Signer) Latest() *ct.SignedTreeHead { return s.heads.current().sth }

// LatestJSON returns the get-sth body (RFC 6962 §4.3) of the latest
// signed tree head. The caller must not modify it.
func (s *Signer) LatestJSON() []byte { return s.heads.current().body }

// PublicKeyPEM returns the log's public key, PEM ("PUBLIC KEY").
func (s *Signer) PublicKeyPEM() []byte { return s.keyPEM }

// Covering returns a signed tree head of at least size entries, waiting
// for the signer when the latest one is smaller. The caller's entries must
// be committed. It returns the signer's error if signing fails, or ctx's.
func (s *Signer) Covering(ctx context.Context, size uint64) (*ct.SignedTreeHead, error) {
	r, err := s.covering(ctx, size)
	if err != nil {
		return nil, err
	}
	return r.sth, nil
}

func (s *Signer) covering(ctx context.Context, size uint64) (*round, error) {
	r := s.heads.current()
	for r.sth.TreeSize < size {
		s.cue() // or a refresh is already due, and will see our entries
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r = s.heads.current()
		if r.sth.TreeSize < size && r.err != nil {
			return nil, r.err
		}
	}
	return r, nil
}
