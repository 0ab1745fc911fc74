package store

// Moving a CA's state from one backend to another (agentca migrate: a
// bbolt file into etcd).

import (
	"context"
	"time"

	"github.com/agentca/agentca/workloads"
	ct "github.com/google/certificate-transparency-go"
)

// Item is one piece of a store's contents, as Exporter.Export reports it:
// exactly one of its groups of fields is set.
type Item struct {
	// Certificate is a certificate record, with its revocation and log
	// fields.
	Certificate *Certificate
	// JoinToken is a join token (its hash, never its secret).
	JoinToken *JoinToken
	// ReplayKey names the certificate (ReplaySerial) whose issuance
	// spent it.
	ReplayKey, ReplaySerial string
	// Task ended at TaskEndedAt.
	Task        string
	TaskEndedAt time.Time
	// Anchors are the trust anchors.
	Anchors *AnchorSet
	// Workloads are the workload definitions.
	Workloads *workloads.Set
	// LogEntry is the leaf input of the issuance log's next entry:
	// entries are reported in index order, from 0.
	LogEntry []byte
	// TreeHead is the last saved signed tree head.
	TreeHead *ct.SignedTreeHead
}

// Exporter is implemented by stores whose whole contents can be read for
// a migration (store/bolt).
type Exporter interface {
	// Export calls fn for every item the store holds, from one
	// consistent snapshot, until fn returns an error, which Export then
	// returns. Items are fn's to keep.
	Export(ctx context.Context, fn func(Item) error) error
}
