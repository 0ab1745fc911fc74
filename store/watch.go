package store

// Optional interfaces of backends shared by several CA replicas (store/etcd):
// change notifications, so that one replica's caches follow what another
// wrote, and tree-head publication, so that every replica serves the same
// signed tree head for a given log size. store/bolt implements neither: a
// bbolt file has one process.

import (
	"context"
	"errors"

	ct "github.com/google/certificate-transparency-go"
)

// ErrUnavailable: the backend cannot be reached or cannot commit (an etcd
// cluster without quorum) within the request timeout. Errors wrapping it
// also wrap context.DeadlineExceeded, so callers that treat a timeout as
// "retry later" (the API answers 503) need no new case. The outcome of a
// write that failed with it may be unknown: store/etcd's Issue reads its
// record back before answering, but a revocation, for one, may have been
// applied (retrying it changes nothing).
var ErrUnavailable = errors.New("store: unavailable")

// ChangeKind says what a Change is about.
type ChangeKind int

// The kinds of Change.
const (
	// ChangeRevoked: a certificate was revoked (Change.Revoked).
	ChangeRevoked ChangeKind = iota + 1
	// ChangeLog: the issuance log grew.
	ChangeLog
	// ChangeTreeHead: a signed tree head was saved.
	ChangeTreeHead
	// ChangeAnchors: the trust anchors changed.
	ChangeAnchors
	// ChangeResync: changes may have been missed (the watch fell so far
	// behind that the history it needed was compacted); anything cached
	// from the store should be refreshed.
	ChangeResync
)

// String names the kind, for logs.
func (k ChangeKind) String() string {
	switch k {
	case ChangeRevoked:
		return "revoked"
	case ChangeLog:
		return "log"
	case ChangeTreeHead:
		return "tree_head"
	case ChangeAnchors:
		return "anchors"
	case ChangeResync:
		return "resync"
	}
	return "unknown"
}

// Change is one change notification. Changes made through this process's
// own store are notified too.
type Change struct {
	Kind ChangeKind
	// Revoked, for ChangeRevoked, holds the revoked certificate's
	// Serial, IssuerSKI, NotAfter, RevokedAt and RevocationReason (not
	// its DER; read the record for the rest).
	Revoked *Certificate
	// TreeHead, for ChangeTreeHead, is the tree head saved (not
	// checked: verify it with the log key before serving it); nil when
	// the store could not decode it.
	TreeHead *ct.SignedTreeHead
}

// Watcher is implemented by stores whose contents other processes change.
type Watcher interface {
	// Watch calls fn, from one goroutine, for every change committed
	// after Watch started, until ctx is done; then it returns ctx's
	// error. It reconnects by itself, replaying what was committed while
	// it was cut off, and reports ChangeResync when it could not.
	Watch(ctx context.Context, fn func(Change)) error
}

// TreeHeadPublisher is implemented by stores shared between replicas that
// each sign tree heads with the same log key. The first tree head
// published for a size wins: every replica publishes what this returns,
// never what it signed itself, so all of them serve one tree head per size.
type TreeHeadPublisher interface {
	// PublishTreeHead stores sth as the latest signed tree head unless
	// one of the same or a larger size is stored already; it returns the
	// stored one (sth, or the other replica's) to publish. It refuses
	// (ErrTreeHead) a tree head the stored log contradicts, and one
	// larger than the stored one but timestamped before it (a replica
	// whose clock is behind), so that published timestamps never go
	// back: the caller signs again with the stored tree head's timestamp
	// (TreeHead) and publishes that.
	PublishTreeHead(ctx context.Context, sth *ct.SignedTreeHead) (*ct.SignedTreeHead, error)
}
