package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// taskPage is how many records one listing reads.
const taskPage = 1000

// endTask is POST /admin/v1/tasks/end: the task is recorded as ended (no
// certificate can be issued or renewed for it any more), then every
// unexpired certificate issued for it is revoked, so every access token
// bound to one of them is refused by relying services once they re-read
// the certificate's status (within their verify cache age).
func (s *Server) endTask(w http.ResponseWriter, r *http.Request) {
	var req wire.TaskEndRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if !ValidTask(req.Task) {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "task must be 1-128 letters, digits, '.', '_', ':', '/' or '-'"))
		return
	}
	if req.Reason == "" {
		req.Reason = "cessationOfOperation"
	}
	reason, err := crl.ParseReason(req.Reason)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "crl: ")))
		return
	}
	// Detached from the request: a task half ended because the caller
	// hung up would leave live certificates behind.
	ctx := context.WithoutCancel(r.Context())
	now := s.now()
	// First record the end: from now on the store refuses every
	// certificate naming the task (sign and renew alike, in the issuing
	// transaction), so the listing below sees every certificate the task
	// will ever have. Repeating an end (after a failure below) is safe.
	if err := s.store.EndTask(ctx, req.Task, now); err != nil {
		s.log.Error("task end: recording the end failed", "task", req.Task, "err", err)
		writeError(w, s.refusal(err))
		return
	}
	out := wire.TaskEndResponse{Task: req.Task, Revoked: []string{}}
	after := ""
	for {
		recs, err := s.store.ListCertificates(ctx, store.ListOptions{Task: req.Task, After: after, Limit: taskPage})
		if err != nil {
			writeError(w, s.refusal(err))
			return
		}
		for _, c := range recs {
			if c.Revoked() || !now.Before(c.NotAfter) {
				continue
			}
			// With the certificates renewed from it.
			recs, err := s.revokeLineage(ctx, r, c.Serial, reason, now, "task-end", "task", req.Task)
			if errors.Is(err, store.ErrNotFound) {
				continue // swept meanwhile
			}
			if err != nil {
				s.log.Error("task end: revocation failed", "task", req.Task, "serial", c.Serial, "err", err)
				writeError(w, s.refusal(err))
				return
			}
			for _, rec := range recs {
				if rec.RevokedAt.Equal(now.UTC()) && !slices.Contains(out.Revoked, rec.Serial) {
					out.Revoked = append(out.Revoked, rec.Serial)
				}
			}
		}
		if len(recs) < taskPage {
			break
		}
		after = recs[len(recs)-1].Serial
	}
	s.log.Info("audit", "op", "task_end", "task", req.Task, "revoked", len(out.Revoked), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, out)
}
