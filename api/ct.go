package api

// The issuance log at the HTTP edge: the tree head signer (Log), the CT v1
// endpoints (RFC 6962 §4) on the plain HTTP listener, GET /v1/log-key, and
// the "log" object of a SignResponse.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// MaxLogEntries bounds the entries one get-entries answer holds; a client
// asking for more gets the first MaxLogEntries and asks again, as RFC 6962
// §4.6 allows.
const MaxLogEntries = 256

// LogStore is what the issuance log's endpoints and signer read from the
// store (store.Log).
type LogStore interface {
	translog.NodeReader
	LogState(ctx context.Context) (translog.State, error)
	LogEntries(ctx context.Context, start, end uint64) ([][]byte, error)
	LogIndex(ctx context.Context, leafHash []byte) (uint64, error)
	TreeHead(ctx context.Context) (*ct.SignedTreeHead, error)
	SaveTreeHead(ctx context.Context, sth *ct.SignedTreeHead) error
}

// LogOptions configure a Log.
type LogOptions struct {
	// Store holds the log. Required.
	Store LogStore
	// Signer signs tree heads with the log key. Required.
	Signer *translog.Signer
	// Appended receives a value after each store commit that appended
	// to the log (bolt.Options.OnLogAppend), so that every batch gets a
	// tree head, whoever issued it. Nil means tree heads are signed only
	// when a SignResponse needs one (Receipt, Covering).
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

// Log signs and publishes the issuance log's tree heads: one signature
// for each committed batch that grew the log (fewer under load: a
// signature covers every batch committed while the previous one was being
// made), each checked before it is published. Run does the signing;
// Covering waits for a tree head that includes a given entry. On a store
// that signs in its commits (store.CommitSigner: store/etcd) the store
// calls the signer for each batch and hands the tree head back before
// the batch's writers are answered; Run then only signs for batches whose
// signature failed, and Offer takes the other replicas' tree heads. The
// published tree head never goes back.
type Log struct {
	store     LogStore
	signer    *translog.Signer
	appended  <-chan struct{}
	now       func() time.Time
	log       *slog.Logger
	saveEvery time.Duration
	keyPEM    []byte
	kick      chan struct{}

	mu  sync.Mutex
	cur *logRound
	// recent are the last tree heads signed in this replica's commits
	// (store.CommitSigner), smallest first: a receipt uses the smallest
	// that covers its entry, whose proof needs only the nodes its batch
	// wrote and the tree's border before it (cached by the store).
	recent []*logRound

	saved *ct.SignedTreeHead // only Run (and NewLog) touch it
}

// logRound is one published outcome of the signer; done is closed when
// the next one replaces it.
type logRound struct {
	sth  *ct.SignedTreeHead
	resp *ct.GetSTHResponse
	body []byte // get-sth JSON
	err  error
	done chan struct{}
	// stored: sth is saved in the store already (signed in a commit,
	// or by another replica).
	stored bool
}

// NewLog checks the stored log against its last saved tree head (a
// mismatch means the store was altered: the daemon must not publish a
// fork), signs a tree head of the current tree and saves it.
func NewLog(ctx context.Context, opts LogOptions) (*Log, error) {
	if opts.Store == nil || opts.Signer == nil {
		return nil, errors.New("api: the log's Store and Signer are required")
	}
	l := &Log{store: opts.Store, signer: opts.Signer, appended: opts.Appended, now: opts.Now, log: opts.Logger,
		saveEvery: opts.SaveEvery, kick: make(chan struct{}, 1)}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.saveEvery <= 0 {
		l.saveEvery = time.Second
	}
	der, err := x509.MarshalPKIXPublicKey(l.signer.Public())
	if err != nil {
		return nil, fmt.Errorf("api: log key: %w", err)
	}
	l.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	st, prev, err := readLogHead(ctx, l.store)
	if err != nil {
		return nil, err
	}
	root, err := translog.RootAt(ctx, l.store, st.Size())
	if err != nil {
		return nil, fmt.Errorf("api: the stored log is damaged (run agentca log audit): %w", err)
	}
	if !bytes.Equal(root, st.Root()) {
		return nil, fmt.Errorf("api: the stored tree state (size %d) contradicts the stored tree nodes: the store was altered (run agentca log audit)", st.Size())
	}
	var ts uint64
	if prev != nil {
		if err := translog.VerifySTH(l.signer.Public(), prev); err != nil {
			return nil, fmt.Errorf("api: the saved tree head does not verify with the log key: %w", err)
		}
		if prev.TreeSize > st.Size() {
			return nil, fmt.Errorf("api: the saved tree head is of size %d but the log holds %d entries: the store lost entries (run agentca log audit)", prev.TreeSize, st.Size())
		}
		root, err := translog.RootAt(ctx, l.store, prev.TreeSize)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(root, prev.SHA256RootHash[:]) {
			return nil, fmt.Errorf("api: the stored log's root at size %d is %x, not the signed %x: the store was altered (run agentca log audit)", prev.TreeSize, root, prev.SHA256RootHash[:])
		}
		ts = prev.Timestamp
		l.saved = prev
	}
	sth, err := l.signer.Sign(st, max(uint64(l.now().UnixMilli()), ts))
	if err != nil {
		return nil, err
	}
	if sth, err = l.publish(ctx, sth); err != nil {
		return nil, err
	}
	r, err := newRound(sth)
	if err != nil {
		return nil, err
	}
	l.cur = r
	l.save(ctx)
	if cs, ok := l.store.(store.CommitSigner); ok {
		// Each batch's tree head is signed in its transaction: the
		// committer hands it over before answering the batch's
		// writers, so Receipt finds it at once.
		cs.SignTreeHeads(l.signInCommit, func(sth *ct.SignedTreeHead) { l.adopt(sth, true) })
	}
	return l, nil
}

// readLogHead reads the log's state and its saved tree head (nil when
// none) at one moment when the store can (store.LogHeadReader): on a
// store other replicas append to, two reads could see a tree head newer
// than the state and take it for a lost entry.
func readLogHead(ctx context.Context, ls LogStore) (translog.State, *ct.SignedTreeHead, error) {
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

// signInCommit is the store.TreeHeadSigner of a store.CommitSigner.
func (l *Log) signInCommit(st translog.State, minTimestamp uint64) (*ct.SignedTreeHead, error) {
	sth, err := l.signer.Sign(st, max(uint64(l.now().UnixMilli()), minTimestamp))
	if err != nil {
		l.log.Error("signing the issuance log's tree head", "tree_size", st.Size(), "err", err)
	}
	return sth, err
}

// maxRecent bounds Log.recent.
const maxRecent = 64

// adopt publishes sth, a tree head the store holds, unless the latest
// published one is as large. own is set for the tree head of a batch this
// replica just committed: it is kept for the batch's receipts (recent)
// even when a larger tree head is published already.
func (l *Log) adopt(sth *ct.SignedTreeHead, own bool) {
	r, err := newRound(sth)
	if err != nil {
		l.log.Error("publishing the issuance log's tree head", "tree_size", sth.TreeSize, "err", err)
		return
	}
	r.stored = true
	l.mu.Lock()
	if own {
		i, found := slices.BinarySearchFunc(l.recent, sth.TreeSize, bySize)
		if !found {
			l.recent = slices.Insert(l.recent, i, r)
			if len(l.recent) > maxRecent {
				l.recent = slices.Delete(l.recent, 0, len(l.recent)-maxRecent)
			}
		}
	}
	old := l.cur
	if sth.TreeSize <= old.sth.TreeSize {
		l.mu.Unlock()
		return
	}
	l.cur = r
	l.mu.Unlock()
	close(old.done)
}

func bySize(r *logRound, size uint64) int { return cmp.Compare(r.sth.TreeSize, size) }

// ownRound returns the smallest recent tree head of this replica's own
// batches that covers size entries, or nil.
func (l *Log) ownRound(size uint64) *logRound {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, _ := slices.BinarySearchFunc(l.recent, size, bySize)
	if i < len(l.recent) {
		return l.recent[i]
	}
	return nil
}

// Offer takes a tree head another replica saved (store.ChangeTreeHead):
// it is published once checked with the log key, if it is larger than the
// latest. A nil sth (one the store could not read, or changes that may
// have been missed) makes the signer look at the stored log instead.
func (l *Log) Offer(sth *ct.SignedTreeHead) {
	if sth == nil {
		select {
		case l.kick <- struct{}{}:
		default:
		}
		return
	}
	if sth.TreeSize <= l.current().sth.TreeSize {
		return
	}
	if err := translog.VerifySTH(l.signer.Public(), sth); err != nil {
		l.log.Error("a tree head saved by another replica does not verify with the log key; not served", "tree_size", sth.TreeSize, "err", err)
		return
	}
	l.adopt(sth, false)
}

// newRound publishes sth, with its get-sth encoding.
func newRound(sth *ct.SignedTreeHead) (*logRound, error) {
	r := &logRound{sth: sth, done: make(chan struct{})}
	var err error
	if r.resp, err = translog.STHResponse(sth); err != nil {
		return nil, err
	}
	if r.body, err = json.Marshal(r.resp); err != nil {
		return nil, err
	}
	return r, nil
}

// Run signs tree heads as the log grows until ctx is done, then saves the
// latest one.
func (l *Log) Run(ctx context.Context) {
	var saveC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			l.save(sctx)
			cancel()
			return
		case <-saveC:
			saveC = nil
			l.save(ctx)
			continue
		case <-l.appended:
		case <-l.kick:
		}
		l.refresh(ctx)
		if r := l.current(); saveC == nil && !r.stored && r.sth != l.saved {
			saveC = time.After(l.saveEvery)
		}
	}
}

// refresh signs the current tree when it has grown past the published
// tree head, and publishes the outcome.
func (l *Log) refresh(ctx context.Context) {
	cur := l.current()
	st, err := l.store.LogState(ctx)
	if err == nil {
		if st.Size() < cur.sth.TreeSize {
			err = fmt.Errorf("api: the log shrank from %d to %d entries", cur.sth.TreeSize, st.Size())
		} else if st.Size() == cur.sth.TreeSize {
			return
		}
	}
	var sth *ct.SignedTreeHead
	if err == nil {
		sth, err = l.signer.Sign(st, max(uint64(l.now().UnixMilli()), cur.sth.Timestamp))
	}
	if err == nil {
		var got *ct.SignedTreeHead
		got, err = l.publish(ctx, sth)
		if errors.Is(err, store.ErrTreeHead) {
			// A replica whose clock is ahead stored a smaller tree
			// head with a later timestamp: sign again with that
			// timestamp, so published timestamps never go back.
			if prev, perr := l.store.TreeHead(ctx); perr == nil && prev.Timestamp > sth.Timestamp {
				if sth, err = l.signer.Sign(st, prev.Timestamp); err == nil {
					got, err = l.publish(ctx, sth)
				}
			}
		}
		sth = got
	}
	var r *logRound
	if err == nil {
		r, err = newRound(sth)
	}
	if err != nil {
		l.log.Error("signing the issuance log's tree head", "err", err)
	}
	// A tree head adopted meanwhile (a commit of this replica, another
	// replica's through Offer) may be larger than what this round
	// signed or published: the published tree head never goes back.
	l.mu.Lock()
	old := l.cur
	switch {
	case err != nil:
		r = &logRound{sth: old.sth, resp: old.resp, body: old.body, err: err, done: make(chan struct{}), stored: old.stored}
	case old != cur && r.sth.TreeSize <= old.sth.TreeSize:
		l.mu.Unlock()
		return
	}
	l.cur = r
	l.mu.Unlock()
	close(old.done)
}

// publish returns the tree head to publish in place of sth, which was
// just signed. With a store shared between replicas
// (store.TreeHeadPublisher, e.g. store/etcd) that is the tree head stored
// first for sth's size, or a larger one another replica stored meanwhile
// (checked with the log key), so every replica serves the same tree head
// for a given size; it is saved already. Otherwise it is sth.
func (l *Log) publish(ctx context.Context, sth *ct.SignedTreeHead) (*ct.SignedTreeHead, error) {
	p, ok := l.store.(store.TreeHeadPublisher)
	if !ok {
		return sth, nil
	}
	got, err := p.PublishTreeHead(ctx, sth)
	if err != nil {
		return nil, err
	}
	if got != sth {
		if err := translog.VerifySTH(l.signer.Public(), got); err != nil {
			return nil, fmt.Errorf("api: the tree head another replica stored does not verify with the log key: %w", err)
		}
	}
	l.saved = got
	return got, nil
}

// save writes the latest tree head to the store unless it already is.
func (l *Log) save(ctx context.Context) {
	r := l.current()
	cur := r.sth
	if cur == l.saved || r.stored {
		return
	}
	if err := l.store.SaveTreeHead(ctx, cur); err != nil {
		l.log.Error("saving the issuance log's tree head", "tree_size", cur.TreeSize, "err", err)
		return
	}
	l.saved = cur
}

func (l *Log) current() *logRound {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// Latest returns the latest signed tree head.
func (l *Log) Latest() *ct.SignedTreeHead { return l.current().sth }

// PublicKeyPEM returns the log's public key, PEM ("PUBLIC KEY").
func (l *Log) PublicKeyPEM() []byte { return l.keyPEM }

// Covering returns a signed tree head of at least size entries, waiting
// for the signer when the latest one is smaller. The caller's entries must
// be committed. It returns the signer's error if signing fails, or ctx's.
func (l *Log) Covering(ctx context.Context, size uint64) (*ct.SignedTreeHead, error) {
	r, err := l.covering(ctx, size)
	if err != nil {
		return nil, err
	}
	return r.sth, nil
}

func (l *Log) covering(ctx context.Context, size uint64) (*logRound, error) {
	r := l.current()
	for r.sth.TreeSize < size {
		select {
		case l.kick <- struct{}{}:
		default: // a refresh is already due, and will see our entries
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r = l.current()
		if r.sth.TreeSize < size && r.err != nil {
			return nil, r.err
		}
	}
	return r, nil
}

// LogReceipt is the "log" object of a SignResponse: the certificate's entry
// in the issuance log and the proof that a signed tree head includes it.
type LogReceipt struct {
	Index uint64 `json:"index"`
	// Timestamp is the RFC 6962 leaf timestamp (milliseconds since the
	// Unix epoch): ctclient get-inclusion-proof --timestamp.
	Timestamp uint64 `json:"timestamp"`
	// LeafHash, RootHash and InclusionProof are base64 in JSON.
	LeafHash       []byte             `json:"leaf_hash"`
	TreeSize       uint64             `json:"tree_size"`
	RootHash       []byte             `json:"root_hash"`
	InclusionProof [][]byte           `json:"inclusion_proof"`
	STH            *ct.GetSTHResponse `json:"sth"`
}

// Receipt returns the receipt of the entry at index with leaf: a tree head
// that includes it (waiting for the signer if need be) and the inclusion
// proof, checked before it is returned.
func (l *Log) Receipt(ctx context.Context, index uint64, leaf *translog.Leaf) (*LogReceipt, error) {
	r := l.ownRound(index + 1)
	if r == nil {
		var err error
		if r, err = l.covering(ctx, index+1); err != nil {
			return nil, err
		}
	}
	sth := r.sth
	path, err := translog.InclusionProof(ctx, l.store, index, sth.TreeSize)
	if err != nil {
		return nil, err
	}
	if err := translog.VerifyInclusion(leaf.Hash, index, sth.TreeSize, path, sth.SHA256RootHash[:]); err != nil {
		return nil, fmt.Errorf("api: the stored log does not prove entry %d: %w", index, err)
	}
	return &LogReceipt{Index: index, Timestamp: leaf.Timestamp(), LeafHash: leaf.Hash, TreeSize: sth.TreeSize,
		RootHash: r.resp.SHA256RootHash, InclusionProof: nonNil(path), STH: r.resp}, nil
}

func nonNil(p [][]byte) [][]byte {
	if p == nil {
		return [][]byte{}
	}
	return p
}

// logReceipt is the SignResponse's log object for issued; nil when the
// server keeps no log.
func (s *Server) logReceipt(ctx context.Context, issued *ca.Issued) (*LogReceipt, *Error) {
	if s.tlog == nil || issued.LogLeaf == nil {
		return nil, nil
	}
	rc, err := s.tlog.Receipt(ctx, issued.LogIndex, issued.LogLeaf)
	if err != nil {
		s.log.Error("issuance log receipt", "serial", issued.Serial, "log_index", issued.LogIndex, "err", err)
		return nil, s.refusal(err)
	}
	return rc, nil
}

// ---------------------------------------------------------------------
// Handlers.

// routeLog adds the CT v1 endpoints and /v1/log-key to mux.
func (s *Server) routeLog(mux *http.ServeMux) {
	mux.HandleFunc(ct.GetSTHPath, allow(http.MethodGet, s.getSTH))
	mux.HandleFunc(ct.GetSTHConsistencyPath, allow(http.MethodGet, s.getSTHConsistency))
	mux.HandleFunc(ct.GetProofByHashPath, allow(http.MethodGet, s.getProofByHash))
	mux.HandleFunc(ct.GetEntriesPath, allow(http.MethodGet, s.getEntries))
	mux.HandleFunc(ct.GetRootsPath, allow(http.MethodGet, s.getRoots))
	mux.HandleFunc(ct.AddChainPath, noSubmissions)
	mux.HandleFunc(ct.AddPreChainPath, noSubmissions)
	mux.HandleFunc("/v1/log-key", allow(http.MethodGet, s.logKey))
}

// noSubmissions answers add-chain and add-pre-chain: the log records only
// what this CA issues.
func noSubmissions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Allow", "")
	writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "this log records only the certificates this CA issues; it takes no submissions"))
}

func (s *Server) logKey(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.tlog.PublicKeyPEM())
}

func (s *Server) getSTH(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(append(s.tlog.current().body, '\n'))
}

// uintParam reads the decimal query parameter name.
func uintParam(r *http.Request, name string) (uint64, *Error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "the %s parameter is required", name)
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, CodeBadRequest, "%s=%q is not a non-negative decimal integer", name, truncate(v, 32))
	}
	return n, nil
}

func (s *Server) getSTHConsistency(w http.ResponseWriter, r *http.Request) {
	first, e := uintParam(r, "first")
	if e == nil {
		var second uint64
		if second, e = uintParam(r, "second"); e == nil {
			size := s.tlog.Latest().TreeSize
			switch {
			case first > second:
				e = errorf(http.StatusBadRequest, CodeBadRequest, "first (%d) is larger than second (%d)", first, second)
			case second > size:
				e = errorf(http.StatusBadRequest, CodeBadRequest, "second (%d) is larger than the latest tree head's size %d", second, size)
			default:
				p, err := translog.ConsistencyProof(r.Context(), s.tlog.store, first, second)
				if err != nil {
					e = s.logError(err)
					break
				}
				writeJSON(w, http.StatusOK, ct.GetSTHConsistencyResponse{Consistency: nonNil(p)})
				return
			}
		}
	}
	writeError(w, e)
}

func (s *Server) getProofByHash(w http.ResponseWriter, r *http.Request) {
	e := func() *Error {
		// A '+' sent unescaped in a query string reads as a space.
		hv := strings.ReplaceAll(r.URL.Query().Get("hash"), " ", "+")
		if hv == "" {
			return errorf(http.StatusBadRequest, CodeBadRequest, "the hash parameter is required")
		}
		hash, err := base64.StdEncoding.DecodeString(hv)
		if err != nil || len(hash) != 32 {
			return errorf(http.StatusBadRequest, CodeBadRequest, "hash=%q is not a base64 SHA-256 leaf hash", truncate(hv, 64))
		}
		size, e := uintParam(r, "tree_size")
		if e != nil {
			return e
		}
		if latest := s.tlog.Latest().TreeSize; size == 0 || size > latest {
			return errorf(http.StatusBadRequest, CodeBadRequest, "tree_size %d is not between 1 and the latest tree head's size %d", size, latest)
		}
		index, err := s.tlog.store.LogIndex(r.Context(), hash)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(http.StatusNotFound, CodeNotFound, "no entry has leaf hash %s", hv)
		}
		if err != nil {
			return s.logError(err)
		}
		if index >= size {
			return errorf(http.StatusBadRequest, CodeBadRequest, "the entry with that hash (index %d) is not in the tree of size %d", index, size)
		}
		p, err := translog.InclusionProof(r.Context(), s.tlog.store, index, size)
		if err != nil {
			return s.logError(err)
		}
		writeJSON(w, http.StatusOK, ct.GetProofByHashResponse{LeafIndex: int64(index), AuditPath: nonNil(p)})
		return nil
	}()
	if e != nil {
		writeError(w, e)
	}
}

func (s *Server) getEntries(w http.ResponseWriter, r *http.Request) {
	e := func() *Error {
		start, e := uintParam(r, "start")
		if e != nil {
			return e
		}
		end, e := uintParam(r, "end")
		if e != nil {
			return e
		}
		size := s.tlog.Latest().TreeSize
		switch {
		case start > end:
			return errorf(http.StatusBadRequest, CodeBadRequest, "start (%d) is larger than end (%d)", start, end)
		case start >= size:
			return errorf(http.StatusBadRequest, CodeBadRequest, "start (%d) is not below the latest tree head's size %d", start, size)
		}
		end = min(end, start+MaxLogEntries-1, size-1)
		inputs, err := s.tlog.store.LogEntries(r.Context(), start, end+1)
		if err != nil {
			return s.logError(err)
		}
		if uint64(len(inputs)) != end+1-start {
			return s.logError(fmt.Errorf("api: the store returned %d entries for [%d, %d]", len(inputs), start, end))
		}
		resp := ct.GetEntriesResponse{Entries: make([]ct.LeafEntry, len(inputs))}
		chains := map[string][]byte{}
		for i, in := range inputs {
			extra, err := s.extraData(in, chains)
			if err != nil {
				return s.logError(fmt.Errorf("entry %d: %w", start+uint64(i), err))
			}
			resp.Entries[i] = ct.LeafEntry{LeafInput: in, ExtraData: extra}
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}()
	if e != nil {
		writeError(w, e)
	}
}

// extraData is the get-entries extra_data of a leaf: the chain from the
// certificate's issuer up to its root (issuer first), as far as this CA
// still knows it. cache holds the encodings by issuer key ID.
func (s *Server) extraData(input []byte, cache map[string][]byte) ([]byte, error) {
	leaf, err := translog.ParseLeaf(input)
	if err != nil {
		return nil, err
	}
	var aki []byte
	if c, err := x509.ParseCertificate(leaf.Certificate()); err == nil {
		aki = c.AuthorityKeyId
	}
	if b, ok := cache[string(aki)]; ok {
		return b, nil
	}
	var chain [][]byte
	if iss, ok := s.trust.Load().issuingCert(hex.EncodeToString(aki)); len(aki) > 0 && ok {
		chain = append(chain, iss.Cert.Raw)
		if iss.Root != nil && !bytes.Equal(iss.Root.Raw, iss.Cert.Raw) {
			chain = append(chain, iss.Root.Raw)
		}
	}
	b, err := translog.ExtraData(chain)
	if err != nil {
		return nil, err
	}
	cache[string(aki)] = b
	return b, nil
}

func (s *Server) getRoots(w http.ResponseWriter, r *http.Request) {
	roots := s.trust.Load().Roots
	resp := ct.GetRootsResponse{Certificates: make([]string, len(roots))}
	for i, c := range roots {
		resp.Certificates[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	writeJSON(w, http.StatusOK, resp)
}

// logError maps a log read failure: an out-of-range request is the
// caller's (400), anything else is ours.
func (s *Server) logError(err error) *Error {
	if errors.Is(err, translog.ErrRange) {
		return errorf(http.StatusBadRequest, CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "translog: "))
	}
	return s.refusal(err)
}
