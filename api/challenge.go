package api

import (
	"context"
	"net/http"
	"time"

	"github.com/agentca/agentca/wire"
)

// challenger is a provisioner that binds attestations to a fresh nonce
// (azure-imds).
type challenger interface {
	Challenge(ctx context.Context) (nonce string, expiresAt time.Time, err error)
}

func (s *Server) challenge(w http.ResponseWriter, r *http.Request) {
	var req wire.ChallengeRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	prov := (*s.provs.Load())[req.Provisioner]
	if prov == nil {
		writeError(w, errorf(http.StatusBadRequest, CodeUnknownProvisioner, "no provisioner named %s", fingerprint(req.Provisioner)))
		return
	}
	c, ok := prov.Provisioner.(challenger)
	if !ok {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "provisioner %q does not use challenges", prov.Name))
		return
	}
	nonce, exp, err := c.Challenge(r.Context())
	if err != nil {
		// The only failure is the random source.
		writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "cannot issue a challenge now; retry"))
		s.log.Warn("challenge refused", "provisioner", prov.Name, "err", err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.ChallengeResponse{Nonce: nonce, ExpiresAt: exp})
}
