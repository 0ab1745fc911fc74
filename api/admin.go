package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentca/agentca/identity"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// MaxTokensPerRequest bounds one token-creation request.
const MaxTokensPerRequest = 100_000

// tokenCreator is a provisioner that mints join tokens.
type tokenCreator interface {
	Create(ctx context.Context, spiffeID string, ttl time.Duration, count int) ([]jointoken.Created, error)
}

// AdminHandler serves the admin API. It has no authentication of its own:
// serve it only on the 0600 unix socket (or behind an admin mTLS check).
func (s *Server) AdminHandler() http.Handler {
	return s.countRefusals(recoverer(s.log, s.adminMux()))
}

// adminMux routes the admin API; AdminHandler serves it on the unix
// socket, and the HTTPS listener under /admin/ to admins (adminOverTLS).
func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", allow(http.MethodGet, s.health))
	mux.HandleFunc("/admin/v1/tokens", allow(http.MethodPost, s.createTokens))
	mux.HandleFunc("/admin/v1/certs", allow(http.MethodGet, s.listCerts))
	mux.HandleFunc("/admin/v1/revoke", allow(http.MethodPost, s.adminRevoke))
	mux.HandleFunc("/admin/v1/replay-keys/clear", allow(http.MethodPost, s.clearReplayKey))
	mux.HandleFunc("/admin/v1/tasks/end", allow(http.MethodPost, s.endTask))
	s.routeAnchors(mux)
	s.routeWorkloads(mux)
	mux.HandleFunc("/", notFound)
	return mux
}

func (s *Server) createTokens(w http.ResponseWriter, r *http.Request) {
	var req wire.TokenRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if err := identity.ValidateWorkloadSPIFFEID(req.SPIFFEID, s.ca.TrustDomain()); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(req.SPIFFEID, "spiffe://") {
			// Not even the shape of an ID: perhaps a token in the wrong field.
			msg = strings.ReplaceAll(msg, strconv.Quote(req.SPIFFEID), echo(req.SPIFFEID))
		}
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "spiffe_id: %s", msg))
		return
	}
	if req.Count < 0 || req.Count > MaxTokensPerRequest {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "count must be between 1 and %d", MaxTokensPerRequest))
		return
	}
	ttl, e := ParseTTL(req.TTL)
	if e != nil {
		writeError(w, e)
		return
	}
	if ttl > identity.Ceiling {
		writeError(w, errorf(http.StatusBadRequest, CodeBadTTL, "a join token may live at most %s", identity.Ceiling))
		return
	}
	var creator tokenCreator
	var name string
	for n, p := range *s.provs.Load() {
		tc, ok := p.Provisioner.(tokenCreator)
		if !ok || (req.Provisioner != "" && n != req.Provisioner) {
			continue
		}
		if creator != nil {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "several join-token provisioners are configured; name one"))
			return
		}
		creator, name = tc, n
	}
	if creator == nil {
		writeError(w, errorf(http.StatusBadRequest, CodeUnknownProvisioner, "no join-token provisioner named %s", fingerprint(req.Provisioner)))
		return
	}
	created, err := creator.Create(r.Context(), req.SPIFFEID, ttl, req.Count)
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	resp := wire.TokenResponse{Tokens: make([]wire.CreatedToken, len(created))}
	for i, c := range created {
		resp.Tokens[i] = wire.CreatedToken{Token: c.Token, SPIFFEID: c.SPIFFEID, Provisioner: name, ExpiresAt: c.ExpiresAt}
	}
	s.log.Info("audit", "op", "token_create", "provisioner", name, "spiffe_id", req.SPIFFEID, "count", len(created),
		"expires_at", created[0].ExpiresAt.Format(time.RFC3339))
	writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) listCerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := store.ListOptions{After: q.Get("after"), SPIFFEID: q.Get("spiffe_id")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "limit must be between 1 and 10000"))
			return
		}
		opts.Limit = n
	}
	if opts.After != "" {
		if _, err := store.NormalizeSerial(opts.After); err != nil {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "after: %s", trimPrefix(err)))
			return
		}
	}
	recs, err := s.store.ListCertificates(r.Context(), opts)
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	out := wire.CertList{Certificates: make([]wire.CertInfo, len(recs))}
	for i, c := range recs {
		out.Certificates[i] = wire.CertInfo{Serial: c.Serial, SPIFFEID: c.SPIFFEID, Provisioner: c.Provisioner, IssuerSKI: c.IssuerSKI,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, Revoked: c.Revoked(), RenewedFrom: c.RenewedFrom}
	}
	writeJSON(w, http.StatusOK, out)
}

// clearReplayKey lets an instance enroll again: an operator removes its
// trust-on-first-use entry (or a JWT ID).
func (s *Server) clearReplayKey(w http.ResponseWriter, r *http.Request) {
	var req wire.ReplayKeyRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if req.Key == "" || len(req.Key) > 1024 {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "key is required (at most 1024 bytes)"))
		return
	}
	serial, err := s.store.ReplayKey(r.Context(), req.Key)
	if err == nil {
		err = s.store.DeleteReplayKey(r.Context(), req.Key)
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no replay key %q", truncate(req.Key, 128)))
		return
	}
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	s.log.Info("audit", "op", "replay_key_clear", "key", req.Key, "serial", serial, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, wire.ReplayKeyResponse{Key: req.Key, Serial: serial})
}
