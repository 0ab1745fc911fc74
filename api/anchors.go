package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// AnchorAdmin runs trust-anchor rotation (the daemon implements it).
type AnchorAdmin interface {
	ListAnchors(ctx context.Context) ([]wire.AnchorStatus, error)
	StageAnchor(ctx context.Context, req wire.StageRequest) (*wire.AnchorStatus, error)
	ActivateAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error)
	RetireAnchor(ctx context.Context, id string, force bool) (*wire.AnchorStatus, error)
}

// Error codes of the anchor operations.
const (
	// CodeAnchorState: the anchor's state does not allow the operation.
	CodeAnchorState = "anchor_state"
	// CodeAnchorUnsafe: the operation could break handshakes; --force
	// overrides.
	CodeAnchorUnsafe = "anchor_unsafe"
)

func (s *Server) routeAnchors(mux *http.ServeMux) {
	mux.HandleFunc("/admin/v1/anchors", allow(http.MethodGet, s.listAnchors))
	mux.HandleFunc("/admin/v1/anchors/stage", allow(http.MethodPost, s.stageAnchor))
	mux.HandleFunc("/admin/v1/anchors/activate", allow(http.MethodPost, s.anchorTransition(AnchorAdmin.ActivateAnchor)))
	mux.HandleFunc("/admin/v1/anchors/retire", allow(http.MethodPost, s.anchorTransition(AnchorAdmin.RetireAnchor)))
}

func (s *Server) anchorError(err error) *Error {
	msg := trimPrefix(err)
	switch {
	case errors.Is(err, ca.ErrAnchorNotFound):
		return errorf(http.StatusNotFound, CodeNotFound, "%s", msg)
	case errors.Is(err, ca.ErrAnchorUnsafe):
		return errorf(http.StatusConflict, CodeAnchorUnsafe, "%s", msg)
	case errors.Is(err, ca.ErrAnchorState):
		return errorf(http.StatusConflict, CodeAnchorState, "%s", msg)
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "the store cannot be reached; retry: %s", msg)
	}
	s.log.Error("anchor operation failed", "err", err)
	return errorf(http.StatusInternalServerError, CodeInternal, "the anchor operation failed: %s", msg)
}

func (s *Server) listAnchors(w http.ResponseWriter, r *http.Request) {
	if s.anchors == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "trust-anchor rotation is not available here"))
		return
	}
	list, err := s.anchors.ListAnchors(r.Context())
	if err != nil {
		writeError(w, s.anchorError(err))
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) stageAnchor(w http.ResponseWriter, r *http.Request) {
	if s.anchors == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "trust-anchor rotation is not available here"))
		return
	}
	var req wire.StageRequest
	if e := decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if req.IntermediateOnly && req.CrossSign {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "cross_sign applies to a new root; an intermediate-only anchor already chains to the current root"))
		return
	}
	st, err := s.anchors.StageAnchor(r.Context(), req)
	if err != nil {
		writeError(w, s.anchorError(err))
		return
	}
	writeJSON(w, http.StatusCreated, st)
}

func (s *Server) anchorTransition(op func(AnchorAdmin, context.Context, string, bool) (*wire.AnchorStatus, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.anchors == nil {
			writeError(w, errorf(http.StatusNotFound, CodeNotFound, "trust-anchor rotation is not available here"))
			return
		}
		var req wire.AnchorRequest
		if e := decodeJSON(w, r, &req, false); e != nil {
			writeError(w, e)
			return
		}
		if req.ID == "" {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "id is required"))
			return
		}
		st, err := op(s.anchors, r.Context(), req.ID, req.Force)
		if err != nil {
			writeError(w, s.anchorError(err))
			return
		}
		writeJSON(w, http.StatusOK, st)
	}
}

// adminOverTLS serves the admin API on the HTTPS listener to clients
// whose current, unrevoked certificate names a SPIFFE ID listed in the
// configuration's admins.
func (s *Server) adminOverTLS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, rec, e := s.clientCertificate(r)
		if e != nil {
			writeError(w, e)
			return
		}
		if !s.isAdmin(rec.SPIFFEID) {
			s.log.Warn("admin request refused", "audit", "admin", "spiffe_id", rec.SPIFFEID, "path", r.URL.Path)
			writeError(w, errorf(http.StatusForbidden, CodeForbidden, "%s is not an admin of this CA", rec.SPIFFEID))
			return
		}
		s.log.Info("admin request", "audit", "admin", "spiffe_id", rec.SPIFFEID, "method", r.Method, "path", r.URL.Path)
		next.ServeHTTP(w, r)
	})
}
