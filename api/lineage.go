package api

// Lineage: a renewal of a certificate already renewed onto another key is
// treated as theft (the lineage is revoked in the store, which answers
// store.RenewalReusedError); every revocation revokes the certificates
// renewed from the one revoked, and each record revoked reaches the
// caches (OnRevoke) and gets its audit line.

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
)

// CodeRenewalReused is the error code of a second renewal of one
// certificate onto another key: its lineage was revoked.
const CodeRenewalReused = "renewal_reused"

// revokeLineage revokes serial and its descendants at at and reports
// every record revoked (revoked). The first record is serial's own,
// revoked now or before.
func (s *Server) revokeLineage(ctx context.Context, r *http.Request, serial string, reason int, at time.Time, by string, attrs ...any) ([]store.Certificate, error) {
	recs, err := s.store.RevokeLineage(ctx, serial, reason, at, false)
	if err != nil {
		return nil, err
	}
	s.revoked(ctx, r, recs, by, attrs...)
	// A node's workload SVIDs go with it (repeating a revocation
	// finishes what a failure here left).
	children, err := s.revokeWorkloads(ctx, r, recs, at)
	return append(recs, children...), err
}

// revoked tells the caches about recs, revoked now, and writes one audit
// line for each; the ones after the first name it as their cause.
func (s *Server) revoked(ctx context.Context, r *http.Request, recs []store.Certificate, by string, attrs ...any) {
	for i := range recs {
		rec := &recs[i]
		if s.onRevoke != nil {
			// Detached from the request: the caches must follow
			// even if the caller hangs up.
			s.onRevoke(context.WithoutCancel(ctx), rec)
		}
		line := []any{"op", "revoke", "serial", rec.Serial, "spiffe_id", rec.SPIFFEID, "reason", crl.ReasonName(rec.RevocationReason),
			"revoked_at", rec.RevokedAt.Format(time.RFC3339), "by", by}
		if i > 0 {
			line = append(line, "lineage_of", recs[0].Serial)
		}
		line = append(line, attrs...)
		s.log.Info("audit", append(line, "remote", r.RemoteAddr)...)
	}
}

// renewalReused handles the store's answer to a reused renewal: the
// revoked records reach the caches, an audit line (audit=renewal_reused)
// and the metric record the theft, and the caller gets 403.
func (s *Server) renewalReused(r *http.Request, rec *store.Certificate, err error) *Error {
	var re *store.RenewalReusedError
	if !errors.As(err, &re) {
		return nil
	}
	s.metrics.renewalReused.Inc()
	s.revoked(r.Context(), r, re.Revoked, "renewal-reused")
	if _, err := s.revokeWorkloads(context.WithoutCancel(r.Context()), r, re.Revoked, s.now()); err != nil {
		s.log.Error("renewal reused: revoking the lineage's workload SVIDs failed", "serial", re.Parent, "err", err)
	}
	attrs := []any{"audit", CodeRenewalReused, "serial", re.Parent, "spiffe_id", rec.SPIFFEID, "revoked", len(re.Revoked), "remote", r.RemoteAddr}
	if re.Err != nil {
		attrs = append(attrs, "err", re.Err.Error())
		s.log.Error("renewal reused: revoking the lineage failed", attrs...)
	} else {
		s.log.Warn("renewal reused: a certificate was renewed twice onto different keys; its lineage is revoked (keyCompromise)", attrs...)
	}
	return errorf(http.StatusForbidden, CodeRenewalReused,
		"this certificate was already renewed onto another key; its whole lineage is revoked as compromised: enroll again")
}
