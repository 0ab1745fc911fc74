// Package bolt is the default store backend: one bbolt file.
//
// Each issuance appends its certificate's leaf to the issuance log in the
// transaction that records it (see log.go for the layout), so the file
// never holds a certificate without its log entry or an entry without its
// certificate.
//
// Writes go through a single committer goroutine that gathers every write
// waiting at the moment and applies them in one transaction with one fsync
// (group commit). Each write first checks everything it depends on and only
// then writes, so a write that is refused leaves nothing behind and the
// others in its batch still commit. Should a batch fail as a whole (a write
// error, not a refusal), each of its writes is retried alone.
package bolt

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/store"
	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var (
	bucketCerts  = []byte("certs")
	bucketTokens = []byte("join_tokens")
	bucketOnce   = []byte("once")
	bucketMeta   = []byte("meta")
	// bucketRevoked indexes revocations by issuer SKI then serial, so a
	// CRL is built without scanning every certificate.
	bucketRevoked = []byte("revoked")
	keySchema     = []byte("schema")
	schema        = []byte("1")
)

// allBuckets are the buckets a read-write Open creates; a file that lacks
// one was last opened by an older agentca.
var allBuckets = [][]byte{bucketCerts, bucketTokens, bucketOnce, bucketMeta, bucketRevoked, bucketLogEntries, bucketLogIndex,
	bucketLogNodes, bucketCertExpiry, bucketTokenExpiry, bucketTasksEnded, bucketRenewals}

// Options tune the store. The zero value is usable.
type Options struct {
	// MaxBatch bounds the writes applied in one transaction; zero means
	// 1024.
	MaxBatch int
	// LockTimeout is how long Open waits for another process's lock on the
	// file; zero means one second.
	LockTimeout time.Duration
	// OnLogAppend, when set, is called by the committer after each
	// commit that appended to the issuance log, before any of the
	// batch's callers is answered (the tree head signer's cue). It must
	// not block.
	OnLogAppend func()
	// OnCommit, when set, is called by the committer after each
	// transaction it committed, with its duration (fsync included) and
	// the number of writes it applied (metrics). It must not block.
	OnCommit func(took time.Duration, writes int)
	// ReadOnly opens the file for reading (a shared lock: the daemon
	// must not be running); every write returns store.ErrReadOnly. For
	// offline audits.
	ReadOnly bool
	// MustExist refuses a file that does not exist or is empty
	// (store.ErrNoStore) instead of creating a new store: only agentca
	// init creates one.
	MustExist bool
}

// Store is a store.Store on a bbolt file.
type Store struct {
	db       *bbolt.DB
	path     string
	ops      chan *op
	quit     chan struct{}
	done     chan struct{}
	maxBatch int
	closeMu  sync.RWMutex
	closed   bool
	readOnly bool
	// damaged is set once a write transaction met a damaged page: every
	// later write gets it (updateTx).
	damaged atomic.Pointer[error]

	onLogAppend func()
	onCommit    func(time.Duration, int)
	// batch gathers the leaves the writes of the transaction being
	// committed append; only the committer touches it.
	batch logBatch
}

var _ store.Store = (*Store)(nil)

// op is one write for the committer. fn must check before it writes: when
// it returns a *refusal, it must not have written anything.
type op struct {
	ctx  context.Context
	fn   func(tx *bbolt.Tx) error
	done chan error
}

// refusal marks an error that a write returned after its checks, with
// nothing written; other errors abort the whole batch.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(err error) error { return &refusal{err} }

// Open opens or creates the bbolt file at path (mode 0600) and starts the
// committer.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if err := checkFile(path, opts.MustExist); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var s *Store
	err := guard(path, func() error {
		if !opts.ReadOnly && opts.MustExist {
			// A truncated file is named as such before a writer
			// maps it.
			ro := opts
			ro.ReadOnly = true
			s, err := open(path, ro)
			if err != nil {
				return err
			}
			if !freelistSynced(path) {
				// After a crash: opening for writes makes bbolt
				// walk every page to rebuild its freelist, in a
				// goroutine where a damaged page cannot be
				// recovered from. Walk them here first.
				if err := walk(s.db); err != nil {
					s.db.Close()
					return err
				}
			}
			if err := s.db.Close(); err != nil {
				return fmt.Errorf("store: %s: %w", path, err)
			}
		}
		var err error
		s, err = open(path, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func open(path string, opts Options) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        opts.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
		ReadOnly:       opts.ReadOnly,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			return nil, damaged(path, err)
		}
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is the daemon running?)", path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := checkSize(db, path); err != nil {
		db.Close()
		return nil, err
	}

	if opts.ReadOnly {
		err := db.View(func(tx *bbolt.Tx) error {
			if meta := tx.Bucket(bucketMeta); meta != nil {
				if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, schema) {
					return fmt.Errorf("unsupported schema version %q", v)
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
		done := make(chan struct{})
		close(done)
		return &Store{db: db, path: path, quit: make(chan struct{}), done: done, readOnly: true}, nil
	}
	err = updateTx(db, func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil && !bytes.Equal(v, schema) {
			return fmt.Errorf("unsupported schema version %q", v)
		}
		if meta.Get(keyLogState) == nil {
			// A new file, or one from before the issuance log.
			if err := backfillLog(tx, time.Now()); err != nil {
				return fmt.Errorf("issuance log: %w", err)
			}
		}
		if meta.Get(keyExpiryIndex) == nil {
			// A new file, or one from before retention.
			if err := buildExpiryIndexes(tx); err != nil {
				return fmt.Errorf("expiry index: %w", err)
			}
			if err := meta.Put(keyExpiryIndex, []byte("1")); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, schema)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	s := &Store{db: db, path: path, ops: make(chan *op, opts.MaxBatch), quit: make(chan struct{}), done: make(chan struct{}), maxBatch: opts.MaxBatch,
		onLogAppend: opts.OnLogAppend, onCommit: opts.OnCommit}
	go s.commitLoop()
	return s, nil
}

// Close finishes the pending writes and closes the file.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	s.closeMu.Unlock()
	<-s.done
	if s.damaged.Load() != nil {
		// A write transaction was abandoned holding the writer
		// lock (updateTx): the file cannot be closed cleanly.
		return nil
	}
	if !s.readOnly {
		// The commits skip writing bbolt's freelist (NoFreelistSync),
		// so a file without one makes the next Open rebuild it by
		// walking every page: seconds and the whole file in memory at
		// a million certificates. A clean close writes it once; only
		// after a crash does the next start walk the file.
		s.db.NoFreelistSync = false
		if err := guard(s.path, func() error { return updateTx(s.db, func(*bbolt.Tx) error { return nil }) }); err != nil {
			if errors.Is(err, store.ErrDamaged) {
				return err // the writer lock is held: no clean close
			}
			return errors.Join(fmt.Errorf("store: writing the freelist: %w", err), s.db.Close())
		}
	}
	return s.db.Close()
}

// write hands fn to the committer and waits until its transaction has
// committed (or fn was refused). Once handed over, it waits regardless of
// ctx, so the caller always learns whether the write happened.
func (s *Store) write(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if s.readOnly {
		return store.ErrReadOnly
	}
	if err := s.damaged.Load(); err != nil {
		return *err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	return <-o.done
}

func (s *Store) commitLoop() {
	defer close(s.done)
	batch := make([]*op, 0, s.maxBatch)
	for {
		select {
		case o := <-s.ops:
			batch = append(batch[:0], o)
		case <-s.quit:
			// Writers that got past the closed check are already
			// in the channel; finish them.
			for {
				select {
				case o := <-s.ops:
					s.commit([]*op{o})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit applies ops in one transaction. Refused ops get their refusal;
// the others get the commit's result. If the batch fails as a whole, each
// op is retried alone so one bad write cannot fail the others.
func (s *Store) commit(ops []*op) {
	errs := make([]error, len(ops))
	began := time.Now()
	err := s.damagedErr()
	if err == nil {
		err = guard(s.path, func() error { return s.update(ops, errs) })
		if errors.Is(err, store.ErrDamaged) {
			s.damaged.Store(&err)
		}
	}
	if err != nil && len(ops) > 1 && !errors.Is(err, store.ErrDamaged) {
		for _, o := range ops {
			s.commit([]*op{o})
		}
		return
	}
	if err == nil && s.onCommit != nil {
		s.onCommit(time.Since(began), len(ops))
	}
	if err == nil && len(s.batch.hashes) > 0 && s.onLogAppend != nil {
		s.onLogAppend()
	}
	for i, o := range ops {
		if errs[i] == nil && err != nil {
			errs[i] = wrap(err)
		}
		o.done <- errs[i]
	}
}

// damagedErr is the error that marked the store damaged, or nil.
func (s *Store) damagedErr() error {
	if err := s.damaged.Load(); err != nil {
		return *err
	}
	return nil
}

// update is commit's transaction.
func (s *Store) update(ops []*op, errs []error) error {
	return updateTx(s.db, func(tx *bbolt.Tx) error {
		// Each attempt starts from the committed log: a retried write
		// must not see the leaves of a batch that rolled back.
		s.batch = logBatch{}
		for i, o := range ops {
			if err := o.ctx.Err(); err != nil {
				errs[i] = err
				continue
			}
			err := o.fn(tx)
			var r *refusal
			if errors.As(err, &r) {
				errs[i] = r.err
				continue
			}
			if err != nil {
				return err
			}
		}
		// The whole batch is one append to the tree.
		if err := s.batch.flush(tx); err != nil {
			return fmt.Errorf("issuance log: %w", err)
		}
		return nil
	})
}

// Issue implements store.Store.
func (s *Store) Issue(ctx context.Context, iss *store.Issuance) error {
	serial, err := serialKey(iss.Certificate.Serial)
	if err != nil {
		return err
	}
	rec := iss.Certificate
	rec.LogIndex, rec.LogTimestamp = 0, 0 // the store assigns them
	leaf := iss.LogLeaf
	if err := store.CheckLogLeaf(&rec, leaf); err != nil {
		return err
	}
	certJSON, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if leaf != nil {
		certJSON = slices.Grow(certJSON, logFieldsRoom)
	}
	var logIndex uint64 // set by the write that commits
	err = s.write(ctx, func(tx *bbolt.Tx) error {
		// Checks first; nothing is written until all pass.
		chk, refused, err := store.CheckIssue(txReader{tx}, iss, rec.Serial)
		if err != nil {
			return err
		}
		if refused != nil {
			return refuse(refused)
		}
		var index uint64
		if leaf != nil {
			if index, err = s.batch.next(tx); err != nil {
				return err
			}
		}
		// Writes.
		v := certJSON
		if leaf != nil {
			v = withLogFields(certJSON, index, leaf.Timestamp())
		}
		if err := tx.Bucket(bucketCerts).Put(serial, v); err != nil {
			return err
		}
		if err := putExpiry(tx.Bucket(bucketCertExpiry), iss.Certificate.NotAfter, serial); err != nil {
			return err
		}
		if chk.Token != nil {
			if err := putJSON(tx.Bucket(bucketTokens), iss.JoinToken, chk.Token); err != nil {
				return err
			}
		}
		for _, k := range iss.Once {
			if err := tx.Bucket(bucketOnce).Put([]byte(k), serial); err != nil {
				return err
			}
		}
		if chk.Renewal != nil {
			key, err := serialKey(iss.Certificate.RenewedFrom)
			if err != nil {
				return err
			}
			if err := putJSON(tx.Bucket(bucketRenewals), key, chk.Renewal); err != nil {
				return err
			}
		}
		if leaf != nil {
			if err := s.batch.add(tx, index, leaf); err != nil {
				return fmt.Errorf("issuance log: %w", err)
			}
			logIndex = index
		}
		return nil
	})
	if err == nil && leaf != nil {
		iss.Certificate.LogIndex, iss.Certificate.LogTimestamp = logIndex, leaf.Timestamp()
	}
	return s.afterIssue(ctx, iss, err)
}

// putJSON stores v's JSON encoding under key in b.
func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// Certificate implements store.Store.
func (s *Store) Certificate(ctx context.Context, serial string) (*store.Certificate, error) {
	key, err := serialKey(serial)
	if err != nil {
		return nil, err
	}
	var c store.Certificate
	err = s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketCerts).Get(key)
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return nil, wrap(err)
	}
	return &c, nil
}

// ListCertificates implements store.Store.
func (s *Store) ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = 1000
	}
	var after []byte
	if opts.After != "" {
		var err error
		if after, err = serialKey(opts.After); err != nil {
			return nil, err
		}
	}
	var out []store.Certificate
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketCerts).Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if opts.SkipRaw(v) {
				continue
			}
			var rec store.Certificate
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode certificate %x: %w", k, err)
			}
			if !opts.Keep(&rec) {
				continue
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, wrap(err)
}

// revokedKey is a length byte, the issuer SKI's bytes, then the serial, so
// that one issuer's entries are contiguous and in serial order.
func revokedKey(issuerSKI string, serial []byte) ([]byte, error) {
	ski, err := hex.DecodeString(issuerSKI)
	if err != nil || len(ski) == 0 || len(ski) > 255 {
		return nil, fmt.Errorf("bad issuer SKI %q", issuerSKI)
	}
	k := make([]byte, 0, 1+len(ski)+len(serial))
	k = append(k, byte(len(ski)))
	k = append(k, ski...)
	return append(k, serial...), nil
}

// Revocations implements store.Store.
func (s *Store) Revocations(ctx context.Context, issuerSKI string, now time.Time) ([]store.Revocation, error) {
	prefix, err := revokedKey(issuerSKI, nil)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var out []store.Revocation
	err = s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketRevoked).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r store.Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode revocation %x: %w", k, err)
			}
			if r.NotAfter.After(now) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out, wrap(err)
}

// ReplayKey implements store.Store.
func (s *Store) ReplayKey(ctx context.Context, key string) (string, error) {
	var serial string
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketOnce).Get([]byte(key))
		if v == nil {
			return store.ErrNotFound
		}
		serial = hex.EncodeToString(v)
		return nil
	})
	return serial, wrap(err)
}

// DeleteReplayKey implements store.Store.
func (s *Store) DeleteReplayKey(ctx context.Context, key string) error {
	return s.write(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketOnce)
		if b.Get([]byte(key)) == nil {
			return refuse(store.ErrNotFound)
		}
		return b.Delete([]byte(key))
	})
}

// CreateJoinTokens implements store.Store.
func (s *Store) CreateJoinTokens(ctx context.Context, toks []store.JoinToken) error {
	vals := make([][]byte, len(toks))
	for i := range toks {
		if len(toks[i].Hash) == 0 {
			return errors.New("store: join token without hash")
		}
		v, err := json.Marshal(&toks[i])
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		vals[i] = v
	}
	return s.write(ctx, func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		seen := make(map[string]bool, len(toks))
		for _, t := range toks {
			if b.Get(t.Hash) != nil || seen[string(t.Hash)] {
				return refuse(store.ErrDuplicateToken)
			}
			seen[string(t.Hash)] = true
		}
		exp := tx.Bucket(bucketTokenExpiry)
		for i, t := range toks {
			if err := b.Put(t.Hash, vals[i]); err != nil {
				return err
			}
			if err := putExpiry(exp, t.ExpiresAt, t.Hash); err != nil {
				return err
			}
		}
		return nil
	})
}

// JoinToken implements store.Store.
func (s *Store) JoinToken(ctx context.Context, hash []byte) (*store.JoinToken, error) {
	var t store.JoinToken
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get(hash)
		if v == nil {
			return store.ErrNotFound
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil {
		return nil, wrap(err)
	}
	return &t, nil
}

// serialKey turns a hex serial (any case, any leading zeros) into the
// canonical big-endian bytes used as the key.
func serialKey(serial string) ([]byte, error) {
	s, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(s)
}

func wrap(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, store.ErrDamaged) {
		return err
	}
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return fmt.Errorf("store: %w", err)
}
