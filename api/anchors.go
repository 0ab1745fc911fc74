package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
)

// AnchorAdmin runs trust-anchor rotation (the daemon implements it).
type AnchorAdmin interface {
	ListAnchors(ctx context.Context) ([]AnchorStatus, error)
	StageAnchor(ctx context.Context, req StageRequest) (*AnchorStatus, error)
	ActivateAnchor(ctx context.Context, id string, force bool) (*AnchorStatus, error)
	RetireAnchor(ctx context.Context, id string, force bool) (*AnchorStatus, error)
}

// AnchorStatus describes one trust anchor: GET /admin/v1/anchors lists
// them, and each transition answers with the anchor's new status.
type AnchorStatus struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// RootSHA256 is the root's fingerprint (what `enroll --fingerprint`
	// pins); NotAfter the root's expiry.
	RootSHA256 string    `json:"root_sha256"`
	IssuerSKI  string    `json:"issuer_ski"`
	NotAfter   time.Time `json:"not_after"`
	// IssuerNotAfter is the issuing CA's expiry.
	IssuerNotAfter time.Time `json:"issuer_not_after"`
	// CrossSigned reports a cross-signed certificate of the issuing CA
	// by the root active when it was staged.
	CrossSigned bool      `json:"cross_signed"`
	StagedAt    time.Time `json:"staged_at"`
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	RetiringAt  time.Time `json:"retiring_at,omitzero"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	// Unexpired counts the unexpired certificates its issuing CA issued
	// to agents (the CA's own server and OCSP certificates aside), and
	// LastNotAfter is when the last of them expires.
	Unexpired    int       `json:"unexpired"`
	LastNotAfter time.Time `json:"last_not_after,omitzero"`
	// SafeToActivate and SafeToRetire say whether activate or retire
	// would go through without --force; Note says why not, or what next.
	SafeToActivate bool   `json:"safe_to_activate"`
	SafeToRetire   bool   `json:"safe_to_retire"`
	Note           string `json:"note,omitempty"`
}

// StageRequest is the body of POST /admin/v1/anchors/stage.
type StageRequest struct {
	// IntermediateOnly stages a new issuing CA under the current root
	// instead of a new root and issuing CA.
	IntermediateOnly bool `json:"intermediate_only,omitempty"`
	// CrossSign has the current root also certify the new issuing CA.
	CrossSign bool `json:"cross_sign,omitempty"`
}

// AnchorRequest is the body of POST /admin/v1/anchors/activate and
// /admin/v1/anchors/retire.
type AnchorRequest struct {
	ID    string `json:"id"`
	Force bool   `json:"force,omitempty"`
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
	var req StageRequest
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

func (s *Server) anchorTransition(op func(AnchorAdmin, context.Context, string, bool) (*AnchorStatus, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.anchors == nil {
			writeError(w, errorf(http.StatusNotFound, CodeNotFound, "trust-anchor rotation is not available here"))
			return
		}
		var req AnchorRequest
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
