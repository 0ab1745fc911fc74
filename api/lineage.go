package api

// Lineage: a renewal of a certificate already renewed onto another key is
// treated as theft (the lineage is revoked in the store, which answers
// store.RenewalReusedError); every revocation revokes the certificates
// renewed from the one revoked. The revocation service (package
// revocation) makes each one: store, caches, audit lines.

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/agentca/agentca/revocation"
	"github.com/agentca/agentca/store"
)

// CodeRenewalReused is the error code of a second renewal of one
// certificate onto another key: its lineage was revoked.
const CodeRenewalReused = revocation.CodeRenewalReused

// revokeLineage revokes serial and its descendants at at and reports
// every record revoked, counted by reason. The first record is serial's
// own, revoked now or before.
func (s *Server) revokeLineage(ctx context.Context, r *http.Request, serial string, reason int, at time.Time, by string) ([]store.Certificate, error) {
	recs, err := s.rev.Revoke(ctx, revocation.Request{Serial: serial, Reason: reason, At: at, By: by, Remote: r.RemoteAddr})
	s.countRevoked(recs)
	return recs, err
}

// countRevoked counts the revocations made here, by reason.
func (s *Server) countRevoked(recs []store.Certificate) {
	for i := range recs {
		s.ops.revoked(recs[i].RevocationReason)
	}
}

// renewalReused handles the store's answer to a reused renewal: the
// revocation service brings the revoked records to the caches and writes
// the audit lines (audit=renewal_reused), the metric records the theft,
// and the caller gets 403.
func (s *Server) renewalReused(r *http.Request, rec *store.Certificate, err error) *Error {
	var re *store.RenewalReusedError
	if !errors.As(err, &re) {
		return nil
	}
	s.metrics.renewalReused.Inc()
	// Detached from the request: the caches must follow even if the
	// caller hangs up.
	s.countRevoked(s.rev.Reused(context.WithoutCancel(r.Context()), re, rec.SPIFFEID, s.now(), r.RemoteAddr))
	return errorf(http.StatusForbidden, CodeRenewalReused,
		"this certificate was already renewed onto another key; its whole lineage is revoked as compromised: enroll again")
}
