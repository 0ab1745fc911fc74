package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/store"
)

// TaskEndRequest is the body of POST /admin/v1/tasks/end.
type TaskEndRequest struct {
	Task string `json:"task"`
	// Reason is an RFC 5280 reason name; empty means
	// cessationOfOperation.
	Reason string `json:"reason,omitempty"`
}

// TaskEndResponse lists what ending the task revoked.
type TaskEndResponse struct {
	Task string `json:"task"`
	// Revoked are the serials revoked now; certificates already revoked
	// or expired are not listed.
	Revoked []string `json:"revoked"`
}

// taskPage is how many records one listing reads.
const taskPage = 1000

// endTask is POST /admin/v1/tasks/end: the task is recorded as ended (no
// certificate can be issued or renewed for it any more), then every
// unexpired certificate issued for it is revoked, so every access token
// bound to one of them is refused by relying services once they re-read
// the certificate's status (within their verify cache age).
func (s *Server) endTask(w http.ResponseWriter, r *http.Request) {
	var req TaskEndRequest
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
	out := TaskEndResponse{Task: req.Task, Revoked: []string{}}
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
			rec, err := s.store.Revoke(ctx, c.Serial, reason, now)
			if errors.Is(err, store.ErrNotFound) {
				continue // swept meanwhile
			}
			if err != nil {
				s.log.Error("task end: revocation failed", "task", req.Task, "serial", c.Serial, "err", err)
				writeError(w, s.refusal(err))
				return
			}
			if s.onRevoke != nil {
				s.onRevoke(ctx, rec)
			}
			s.log.Info("audit", "op", "revoke", "serial", rec.Serial, "spiffe_id", rec.SPIFFEID, "reason", crl.ReasonName(rec.RevocationReason),
				"revoked_at", rec.RevokedAt.Format(time.RFC3339), "by", "task-end", "task", req.Task, "remote", r.RemoteAddr)
			out.Revoked = append(out.Revoked, rec.Serial)
			children, err := s.revokeWorkloads(ctx, r, rec.Serial, now)
			out.Revoked = append(out.Revoked, children...)
			if err != nil {
				writeError(w, s.refusal(err))
				return
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
