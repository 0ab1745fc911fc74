package etcd

import (
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
)

// TreeHeadSigner signs the tree head of each batch that appends to the
// issuance log, in the batch's own transaction (Options.TreeHeads; the
// daemon's is a logsign.BatchSigner). The new log state and its signed
// tree head are committed together, so a replica needs no round of its
// own to publish a tree head, no two replicas ever race to publish one,
// and every size the log passes through has exactly one tree head.
type TreeHeadSigner interface {
	// SignTreeHead signs the tree head of the batch's new log state st
	// with a timestamp of at least minTimestamp (milliseconds since the
	// Unix epoch, the saved tree head's), before the batch is committed.
	// A batch whose signature fails or is late is committed without a
	// tree head (Options.OnLogAppend is then called).
	SignTreeHead(st translog.State, minTimestamp uint64) (*ct.SignedTreeHead, error)
	// TreeHeadCommitted gets the tree head after its batch is committed,
	// before any of the batch's writers is answered. It must not block.
	TreeHeadCommitted(sth *ct.SignedTreeHead)
}
