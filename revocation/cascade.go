package revocation

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/agentca/agentca/store"
)

// reasonCessation is RFC 5280 cessationOfOperation.
const reasonCessation = 5

// page is how many records one listing reads.
const page = 1000

// maxLineage bounds how many earlier certificates of a node
// revokeWorkloads follows.
const maxLineage = 100_000

// TaskEnd is what ending a task revoked.
type TaskEnd struct {
	// Serials are the certificates revoked now, each once; certificates
	// already revoked or expired are not listed.
	Serials []string
	// Records are every record revoked, in the order revoked (a record
	// may appear twice when two lineages share it).
	Records []store.Certificate
}

// EndTask records that task ended at at (from then on the store refuses
// every certificate naming it), then revokes every unexpired certificate
// issued for it, with their lineages and workload SVIDs, and writes the
// task_end audit line. Repeating an end after a failure is safe.
func (s *Service) EndTask(ctx context.Context, task string, reason int, at time.Time, remote string) (*TaskEnd, error) {
	// First record the end: from now on the store refuses every
	// certificate naming the task (sign and renew alike, in the issuing
	// transaction), so the listing below sees every certificate the task
	// will ever have.
	if err := s.st.EndTask(ctx, task, at); err != nil {
		s.log.Error("task end: recording the end failed", "task", task, "err", err)
		return nil, err
	}
	out := &TaskEnd{Serials: []string{}}
	after := ""
	for {
		recs, err := s.st.ListCertificates(ctx, store.ListOptions{Task: task, After: after, Limit: page})
		if err != nil {
			return out, err
		}
		for _, c := range recs {
			// A certificate renewed from one revoked above is listed
			// unrevoked: the page was read before.
			if c.Revoked() || !at.Before(c.NotAfter) || slices.Contains(out.Serials, c.Serial) {
				continue
			}
			// With the certificates renewed from it.
			revoked, err := s.Revoke(ctx, Request{Serial: c.Serial, Reason: reason, At: at, By: "task-end", Remote: remote, Attrs: []any{"task", task}})
			out.Records = append(out.Records, revoked...)
			if errors.Is(err, store.ErrNotFound) {
				continue // swept meanwhile
			}
			if err != nil {
				s.log.Error("task end: revocation failed", "task", task, "serial", c.Serial, "err", err)
				return out, err
			}
			for _, rec := range revoked {
				if rec.RevokedAt.Equal(at.UTC()) && !slices.Contains(out.Serials, rec.Serial) {
					out.Serials = append(out.Serials, rec.Serial)
				}
			}
		}
		if len(recs) < page {
			break
		}
		after = recs[len(recs)-1].Serial
	}
	s.log.Info("audit", "op", "task_end", "task", task, "revoked", len(out.Serials), "remote", remote)
	return out, nil
}

// revokeWorkloads revokes the unexpired workload SVIDs issued to the node
// certificates nodes (a revoked lineage) or to the certificates the first
// of them renewed (a node agent renews its certificate, and the SVIDs it
// got with the earlier ones may still be valid), with reason
// cessationOfOperation (their keys were not compromised by the node's
// revocation itself). It returns the records revoked.
func (s *Service) revokeWorkloads(ctx context.Context, nodes []store.Certificate, now time.Time, remote string) ([]store.Certificate, error) {
	if len(nodes) == 0 || s.wl == nil {
		return nil, nil
	}
	serial := nodes[0].Serial
	// The listing reads every record (there is no index by parent yet;
	// the records without a parent are skipped by a byte search, not
	// decoded); a CA that never had a workload definition has no
	// workload SVID to look for.
	if set, err := s.wl.Workloads(ctx); err != nil {
		return nil, err
	} else if set.Sequence == 0 {
		return nil, nil
	}
	parents, err := s.nodeLineage(ctx, nodes, now)
	if err != nil {
		return nil, err
	}
	var out []store.Certificate
	after := ""
	for {
		recs, err := s.st.ListCertificates(ctx, store.ListOptions{After: after, Limit: page, Workloads: true})
		if err != nil {
			return out, err
		}
		for _, c := range recs {
			if c.Parent == "" || !parents[c.Parent] || c.Revoked() || !now.Before(c.NotAfter) {
				continue
			}
			rec, err := s.RevokeIssued(ctx, c.Serial, now, "node-revoked:"+serial, remote)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return out, err
			}
			out = append(out, *rec)
		}
		if len(recs) < page {
			return out, nil
		}
		after = recs[len(recs)-1].Serial
	}
}

// nodeLineage is the set of serials whose workload SVIDs go with nodes:
// nodes, and the first one's lineage back to the certificates whose SVIDs
// could still be valid (an SVID was issued before its node certificate
// expired and lives at most the ceiling).
func (s *Service) nodeLineage(ctx context.Context, nodes []store.Certificate, now time.Time) (map[string]bool, error) {
	parents := map[string]bool{}
	for _, n := range nodes[1:] {
		parents[n.Serial] = true
	}
	for cur := nodes[0].Serial; cur != "" && len(parents) < maxLineage && !parents[cur]; {
		parents[cur] = true
		rec, err := s.st.Certificate(ctx, cur)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		if s.ceiling > 0 && rec.NotAfter.Before(now.Add(-s.ceiling)) {
			break
		}
		cur = rec.RenewedFrom
	}
	return parents, nil
}
