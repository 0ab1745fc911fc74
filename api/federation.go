package api

// GET /v1/bundle?trust_domain=…: the bundle of this trust domain or of a
// federated one (SPIFFE federation, docs/federation.md), served by
// go-spiffe's federation handler from the last good bundle held.

import (
	"net/http"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CodeUnknownTrustDomain: /v1/bundle?trust_domain= names a trust domain
// this CA is not federated with (or holds no bundle of yet).
const CodeUnknownTrustDomain = "unknown_trust_domain"

func (s *Server) federatedBundle(w http.ResponseWriter, r *http.Request) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || len(q) != 1 || len(q["trust_domain"]) != 1 {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "the only query parameter is one trust_domain"))
		return
	}
	name := q.Get("trust_domain")
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil || td.Name() != name {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "trust_domain %q is not a trust domain name", truncate(name, 256)))
		return
	}
	trust := s.trust.Load()
	if td == trust.sb.TrustDomain() {
		r.URL.RawQuery = ""
		s.bundle(w, r)
		return
	}
	if s.federated == nil {
		writeError(w, errorf(http.StatusNotFound, CodeUnknownTrustDomain, "this CA is not federated with %q", name))
		return
	}
	if _, err := s.federated.GetBundleForTrustDomain(td); err != nil {
		writeError(w, errorf(http.StatusNotFound, CodeUnknownTrustDomain, "this CA holds no bundle of %q", name))
		return
	}
	h, err := federation.NewHandler(td, s.federated)
	if err != nil {
		writeError(w, errorf(http.StatusInternalServerError, CodeInternal, "cannot serve the bundle"))
		return
	}
	w.Header().Set("Cache-Control", "no-cache")
	h.ServeHTTP(w, r)
}
