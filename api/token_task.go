package api

import "net/http"

// taskLive refuses a token for a certificate whose task has ended: ending
// a task records the end before it revokes the task's certificates, so
// from that moment on no token names the task, even for a certificate
// not revoked yet (or whose revocation failed).
func (s *Server) taskLive(r *http.Request, a *tokenAudit, task string) *OAuthError {
	if task == "" {
		return nil
	}
	ended, err := s.store.TaskEnded(r.Context(), task)
	if err != nil {
		a.detail = err.Error()
		return oauthErr(http.StatusServiceUnavailable, OAuthUnavailable, "the CA cannot check the task right now; retry")
	}
	if ended {
		a.detail = "the task has ended"
		return oauthErr(http.StatusForbidden, OAuthAccessDenied, "the task this client certificate was issued for has ended; no token is issued for it")
	}
	return nil
}
