package api

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/ocsp"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
)

// CRLs gives the current CRL of an issuer.
type CRLs interface {
	// CRL returns the current CRL of the issuer whose SKI is ski (hex),
	// or of the active issuer when ski is empty; nil if none.
	CRL(ski string) *crl.CRL
}

// maxOCSPRequest bounds an OCSP request; real ones are about 100 bytes.
const maxOCSPRequest = 16 << 10

// selfRevoke is POST /v1/revoke: a leaf revokes itself, or a client whose
// SPIFFE ID is in the configured admins revokes any serial.
func (s *Server) selfRevoke(w http.ResponseWriter, r *http.Request) {
	leaf, rec, e := s.clientCertificate(r)
	if e != nil && !(e.Code == CodeCertificateRevoked && rec != nil) {
		writeError(w, e)
		return
	}
	var req wire.RevokeRequest
	if e := decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	serial := rec.Serial
	if req.Serial != "" {
		n, err := store.NormalizeSerial(req.Serial)
		if err != nil {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "bad serial %s (want up to 40 hex digits)", echo(req.Serial)))
			return
		}
		if n != rec.Serial {
			caller := ""
			if len(leaf.URIs) == 1 {
				caller = leaf.URIs[0].String()
			}
			if rec.Revoked() || !s.isAdmin(caller) {
				writeError(w, errorf(http.StatusForbidden, CodeForbidden, "only the certificate itself or an admin may revoke serial %s", n))
				return
			}
		}
		serial = n
	}
	s.revoke(w, r, serial, req.Reason, "mtls:"+rec.SPIFFEID)
}

// adminRevoke is POST /admin/v1/revoke on the admin socket.
func (s *Server) adminRevoke(w http.ResponseWriter, r *http.Request) {
	var req wire.RevokeRequest
	if e := decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	serial, err := store.NormalizeSerial(req.Serial)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "serial: bad serial %s (want up to 40 hex digits)", echo(req.Serial)))
		return
	}
	s.revoke(w, r, serial, req.Reason, "admin-socket")
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request, serial, reasonName, by string) {
	reason, err := crl.ParseReason(reasonName)
	if err != nil {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "unknown revocation reason %s (want one of %v)", echo(reasonName), crl.ReasonNames()))
		return
	}
	// Detached from the request: the certificates renewed from serial
	// are revoked with it and the caches must learn of each.
	recs, err := s.revokeLineage(context.WithoutCancel(r.Context()), r, serial, reason, s.now(), by)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, errorf(http.StatusNotFound, CodeUnknownCertificate, "this CA issued no certificate with serial %s", serial))
		return
	}
	if err != nil {
		writeError(w, s.refusal(err))
		return
	}
	rec := &recs[0]
	writeJSON(w, http.StatusOK, wire.RevokeResponse{Serial: rec.Serial, SPIFFEID: rec.SPIFFEID, RevokedAt: rec.RevokedAt,
		Reason: crl.ReasonName(rec.RevocationReason)})
}

// ocspHandler serves POST /ocsp and GET /ocsp/<base64 request>. It is
// mounted before the mux because the base64 path may hold "//", which
// the mux would clean away. Every parse failure is an OCSP
// malformedRequest answer, never an HTTP 500.
func (s *Server) ocspHandler(w http.ResponseWriter, r *http.Request) {
	var der []byte
	switch r.Method {
	case http.MethodPost:
		if r.ContentLength > maxOCSPRequest {
			writeError(w, errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "an OCSP request is at most %d bytes", maxOCSPRequest))
			return
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOCSPRequest))
		if err != nil {
			writeError(w, errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "an OCSP request is at most %d bytes", maxOCSPRequest))
			return
		}
		der = b
	case http.MethodGet, http.MethodHead:
		raw := strings.TrimPrefix(r.URL.EscapedPath(), "/ocsp")
		raw = strings.TrimPrefix(raw, "/")
		if len(raw) > 2*maxOCSPRequest {
			writeError(w, errorf(http.StatusRequestURITooLong, CodeTooLarge, "the OCSP request in the URL is too long"))
			return
		}
		unescaped, err := url.PathUnescape(raw)
		if err == nil {
			der, err = decodeBase64(unescaped)
		}
		if err != nil {
			s.ops.ocspAnswer(nil, ocsp.MalformedResponse)
			s.writeOCSP(w, r, nil, ocsp.MalformedResponse)
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use GET or POST"))
		return
	}
	resp, body, err := s.ocsp.Respond(r.Context(), der)
	if err != nil {
		s.log.Debug("ocsp request refused", "err", err, "remote", r.RemoteAddr)
	}
	s.ops.ocspAnswer(resp, body)
	s.writeOCSP(w, r, resp, body)
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// writeOCSP writes an OCSP answer; signed responses to GET carry the RFC
// 5019 caching headers.
func (s *Server) writeOCSP(w http.ResponseWriter, r *http.Request, resp *ocsp.Response, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/ocsp-response")
	if resp != nil && r.Method != http.MethodPost {
		now := s.now()
		maxAge := max(int(resp.NextUpdate.Sub(now).Seconds()), 0)
		h.Set("Cache-Control", "max-age="+strconv.Itoa(maxAge)+", public, no-transform, must-revalidate")
		h.Set("ETag", resp.ETag)
		h.Set("Last-Modified", resp.ThisUpdate.UTC().Format(http.TimeFormat))
		h.Set("Expires", resp.NextUpdate.UTC().Format(http.TimeFormat))
		if match := r.Header.Get("If-None-Match"); match != "" && match == resp.ETag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// crlHandler serves GET /crl (the active issuer) and /crl/<issuer-ski-hex>.
func (s *Server) crlHandler(w http.ResponseWriter, r *http.Request) {
	ski := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/crl"), "/")
	c := s.crls.CRL(strings.ToLower(ski))
	if c == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no CRL for issuer %q", truncate(ski, 64)))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/pkix-crl")
	h.Set("ETag", c.ETag)
	h.Set("Last-Modified", c.ThisUpdate.UTC().Format(http.TimeFormat))
	h.Set("Expires", c.NextUpdate.UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "max-age="+strconv.Itoa(max(int(time.Until(c.NextUpdate).Seconds()), 0))+", public, no-transform")
	if match := r.Header.Get("If-None-Match"); match != "" && match == c.ETag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(c.DER)
}

// issuerCert serves GET /ca/<issuer-ski-hex>.crt: the issuing CA in DER,
// the caIssuers URL of every leaf.
func (s *Server) issuerCert(w http.ResponseWriter, r *http.Request) {
	ski := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/ca/"), ".crt")
	iss, ok := s.trust.Load().issuingCert(strings.ToLower(ski))
	if !ok {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "no issuing CA %q", truncate(ski, 64)))
		return
	}
	w.Header().Set("Content-Type", "application/pkix-cert")
	w.Header().Set("Cache-Control", "max-age=3600, public")
	_, _ = w.Write(iss.Cert.Raw)
}
