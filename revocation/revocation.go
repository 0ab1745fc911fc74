// Package revocation is the one place a revocation is made: it writes the
// revocation (a certificate's, its lineage's, or a task's end) to the
// store, hands the records revoked to the OCSP and CRL caches through one
// Notifier, and writes one audit line per record.
//
// It does not decide who may revoke (the api handlers do) nor encode
// anything (ocsp and crl do). On a store no other process writes (bbolt)
// the Notifier is Direct; on a store replicas share (etcd) it is a Feed
// the store's watch fills, so a revocation reaches the caches by one path
// whichever replica made it.
package revocation

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/workloads"
)

// Store is what revocation needs from the store.
type Store interface {
	Certificate(ctx context.Context, serial string) (*store.Certificate, error)
	ListCertificates(ctx context.Context, opts store.ListOptions) ([]store.Certificate, error)
	Revoke(ctx context.Context, serial string, reason int, at time.Time) (*store.Certificate, error)
	RevokeLineage(ctx context.Context, serial string, reason int, at time.Time, ancestors bool) ([]store.Certificate, error)
	EndTask(ctx context.Context, task string, at time.Time) error
}

// Workloads reads the workload definitions: a CA that never had one has
// no workload SVID to revoke with its node.
type Workloads interface {
	Workloads(ctx context.Context) (*workloads.Set, error)
}

// Options configure a Service.
type Options struct {
	// Store records the revocations. Required.
	Store Store
	// Workloads, when set, makes a node's revocation revoke the workload
	// SVIDs issued to it.
	Workloads Workloads
	// Notifier carries the revocations to the caches; nil means no
	// caches.
	Notifier Notifier
	// Ceiling is the longest lifetime a certificate can have: how far
	// back a node's lineage may hold certificates whose workload SVIDs
	// are still valid. Zero follows the whole lineage.
	Ceiling time.Duration
	// Logger receives the audit lines. Nil discards.
	Logger *slog.Logger
}

// Service makes revocations.
type Service struct {
	st      Store
	wl      Workloads
	notify  Notifier
	ceiling time.Duration
	log     *slog.Logger
}

// New checks opts and returns a Service.
func New(opts Options) (*Service, error) {
	if opts.Store == nil {
		return nil, errors.New("revocation: Store is required")
	}
	s := &Service{st: opts.Store, wl: opts.Workloads, notify: opts.Notifier, ceiling: opts.Ceiling, log: opts.Logger}
	if s.notify == nil {
		s.notify = Direct(CacheFunc(func(context.Context, *store.Certificate) {}))
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Request is one revocation.
type Request struct {
	Serial string
	// Reason is an RFC 5280 reason code.
	Reason int
	At     time.Time
	// By names who asked, for the audit line ("admin-socket",
	// "mtls:<SPIFFE ID>", "task-end").
	By string
	// Remote is the caller's address, for the audit line.
	Remote string
	// Attrs are more audit attributes (key, value, ...).
	Attrs []any
}

// Revoke revokes r.Serial with the certificates renewed from it and, when
// it is a node, the workload SVIDs issued to its lineage. It returns every
// record revoked, r.Serial's own first (revoked now or before);
// store.ErrNotFound when no such certificate is recorded.
func (s *Service) Revoke(ctx context.Context, r Request) ([]store.Certificate, error) {
	recs, err := s.st.RevokeLineage(ctx, r.Serial, r.Reason, r.At, false)
	if err != nil {
		return nil, err
	}
	now := recs
	if !recs[0].RevokedAt.Equal(r.At.UTC()) {
		now = recs[1:] // revoked before: the caches have it
	}
	s.notify.Recorded(ctx, now)
	s.audit(recs, r.By, r.Remote, r.Attrs...)
	// A node's workload SVIDs go with it (repeating a revocation
	// finishes what a failure here left).
	children, err := s.revokeWorkloads(ctx, recs, r.At, r.Remote)
	return append(recs, children...), err
}

// RevokeIssued revokes serial alone (reason cessationOfOperation), a
// workload SVID issued while its node was being revoked.
func (s *Service) RevokeIssued(ctx context.Context, serial string, at time.Time, by, remote string) (*store.Certificate, error) {
	rec, err := s.st.Revoke(ctx, serial, reasonCessation, at)
	if err != nil {
		return nil, err
	}
	s.notify.Recorded(ctx, []store.Certificate{*rec})
	s.audit([]store.Certificate{*rec}, by, remote)
	return rec, nil
}

// CodeRenewalReused names a second renewal of one certificate onto
// another key in its audit line.
const CodeRenewalReused = "renewal_reused"

// Reused follows the store's answer to a reused renewal (the store
// revoked the lineage in the issuing transaction): the records reach the
// caches with their audit lines, the workload SVIDs of the lineage are
// revoked, and one line (audit=renewal_reused) records the theft.
// spiffeID is the renewed certificate's. It returns every record revoked.
func (s *Service) Reused(ctx context.Context, re *store.RenewalReusedError, spiffeID string, at time.Time, remote string) []store.Certificate {
	s.notify.Recorded(ctx, re.Revoked)
	s.audit(re.Revoked, "renewal-reused", remote)
	out := re.Revoked
	children, err := s.revokeWorkloads(ctx, re.Revoked, at, remote)
	if err != nil {
		s.log.Error("renewal reused: revoking the lineage's workload SVIDs failed", "serial", re.Parent, "err", err)
	}
	out = append(out, children...)
	attrs := []any{"audit", CodeRenewalReused, "serial", re.Parent, "spiffe_id", spiffeID, "revoked", len(re.Revoked), "remote", remote}
	if re.Err != nil {
		attrs = append(attrs, "err", re.Err.Error())
		s.log.Error("renewal reused: revoking the lineage failed", attrs...)
	} else {
		s.log.Warn("renewal reused: a certificate was renewed twice onto different keys; its lineage is revoked (keyCompromise)", attrs...)
	}
	return out
}

// audit writes one audit line for each record of recs, revoked now; the
// ones after the first name it as their cause.
func (s *Service) audit(recs []store.Certificate, by, remote string, attrs ...any) {
	for i := range recs {
		rec := &recs[i]
		line := []any{"op", "revoke", "serial", rec.Serial, "spiffe_id", rec.SPIFFEID, "reason", crl.ReasonName(rec.RevocationReason),
			"revoked_at", rec.RevokedAt.Format(time.RFC3339), "by", by}
		if i > 0 {
			line = append(line, "lineage_of", recs[0].Serial)
		}
		line = append(line, attrs...)
		s.log.Info("audit", append(line, "remote", remote)...)
	}
}
