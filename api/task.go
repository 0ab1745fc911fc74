package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/wire"
)

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
	end, err := s.rev.EndTask(context.WithoutCancel(r.Context()), req.Task, reason, s.now(), r.RemoteAddr)
	if end != nil {
		s.countRevoked(end.Records)
	}
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	writeJSON(w, http.StatusOK, wire.TaskEndResponse{Task: req.Task, Revoked: end.Serials})
}
