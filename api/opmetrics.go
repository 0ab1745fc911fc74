package api

import (
	"net/http"
	"time"

	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/ocsp"
	"github.com/prometheus/client_golang/prometheus"
	xocsp "golang.org/x/crypto/ocsp"
)

// opMetrics are what an operator watches besides issuance (docs/api.md
// lists each): OCSP answers, revocations, access tokens, refusals by
// error code, and the issuance log's size and freshness.
type opMetrics struct {
	ocspResponses *prometheus.CounterVec
	revocations   *prometheus.CounterVec
	accessTokens  *prometheus.CounterVec
	refusals      *prometheus.CounterVec
}

func newOpMetrics(reg prometheus.Registerer, s *Server) *opMetrics {
	m := &opMetrics{
		ocspResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agentca", Name: "ocsp_responses_total",
			Help: "OCSP answers by status: good, revoked, unknown (signed), or malformed, unauthorized, try_later, internal (unsigned errors).",
		}, []string{"status"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agentca", Name: "revocations_total",
			Help: "Certificates revoked through this process (admin, self-revocation, task end), by RFC 5280 reason.",
		}, []string{"reason"}),
		accessTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agentca", Name: "access_tokens_total",
			Help: "POST /v1/token answers: issued or refused.",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agentca", Name: "refusals_total",
			Help: "Error answers of every listener by error code (the body's \"error\").",
		}, []string{"code"}),
	}
	reg.MustRegister(m.ocspResponses, m.revocations, m.accessTokens, m.refusals)
	for _, st := range []string{"good", "revoked", "unknown"} {
		m.ocspResponses.WithLabelValues(st)
	}
	for _, o := range []string{"issued", "refused"} {
		m.accessTokens.WithLabelValues(o)
	}
	if s.ocsp != nil {
		responder := s.ocsp
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "agentca", Name: "ocsp_cache_hits_total",
			Help: "OCSP answers served from the cache of signed responses (no store read, no signature).",
		}, func() float64 { return float64(responder.Stats().CacheHits) }))
	}
	if s.tlog != nil {
		tlog := s.tlog
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "agentca", Name: "log_size",
			Help: "Entries in the issuance log covered by the newest signed tree head.",
		}, func() float64 {
			if sth := tlog.Latest(); sth != nil {
				return float64(sth.TreeSize)
			}
			return 0
		}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "agentca", Name: "log_sth_age_seconds",
			Help: "Age of the newest signed tree head (its timestamp to now).",
		}, func() float64 {
			if sth := tlog.Latest(); sth != nil {
				return s.now().Sub(time.UnixMilli(int64(sth.Timestamp))).Seconds()
			}
			return 0
		}))
	}
	return m
}

func (m *opMetrics) ocspAnswer(resp *ocsp.Response, body []byte) {
	status := "internal"
	switch {
	case resp != nil && resp.Status == xocsp.Good:
		status = "good"
	case resp != nil && resp.Status == xocsp.Revoked:
		status = "revoked"
	case resp != nil:
		status = "unknown"
	case string(body) == string(ocsp.MalformedResponse):
		status = "malformed"
	case string(body) == string(ocsp.UnauthorizedResponse):
		status = "unauthorized"
	case string(body) == string(ocsp.TryLaterResponse):
		status = "try_later"
	}
	m.ocspResponses.WithLabelValues(status).Inc()
}

func (m *opMetrics) revoked(reason int) {
	m.revocations.WithLabelValues(crl.ReasonName(reason)).Inc()
}

// refusalCounter is the ResponseWriter countRefusals gives handlers:
// writing an error answer counts its code.
type refusalCounter struct {
	http.ResponseWriter
	m *opMetrics
}

func (w *refusalCounter) refused(code string)         { w.m.refusals.WithLabelValues(code).Inc() }
func (w *refusalCounter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countRefusals makes the error answers of h count in refusals_total.
func (s *Server) countRefusals(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*refusalCounter); !ok {
			w = &refusalCounter{ResponseWriter: w, m: s.ops}
		}
		h.ServeHTTP(w, r)
	})
}

// countRefusal counts an error answer written to w.
func countRefusal(w http.ResponseWriter, code string) {
	if rc, ok := w.(*refusalCounter); ok {
		rc.refused(code)
	}
}
