package api

import (
	"net/http"

	"github.com/agentca/agentca/wire"
)

// TaskStatusPath is where relying services learn whether a task has
// ended (docs/delegation.md): GET /v1/task-status?task=ID.
const TaskStatusPath = "/v1/task-status"

// taskStatus answers whether a task has ended, for relying services that
// accept delegated tokens: a chain's token is bound to the last actor's
// certificate, which ending the task does not revoke when that actor was
// not enrolled for the task, so they ask here (and cache the answer for
// at most their status cache age). Anyone may ask; the answer is one bit.
func (s *Server) taskStatus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	task := q.Get("task")
	if len(q["task"]) != 1 || !ValidTask(task) {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "name one task: 1-128 letters, digits, '.', '_', ':', '/' or '-'"))
		return
	}
	ended, err := s.store.TaskEnded(r.Context(), task)
	if err != nil {
		s.log.Warn("reading a task's status", "err", err)
		writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "the CA cannot read the task's status right now; retry"))
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, wire.TaskStatus{Task: task, Ended: ended})
}
