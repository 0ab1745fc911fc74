package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the daemon's Prometheus collectors.
type Metrics struct {
	issuances *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	// renewalReused counts second renewals of one certificate onto
	// another key (each revoked a lineage).
	renewalReused prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		issuances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agentca", Name: "issuance_total",
			Help: "Certificate requests by provisioner, operation (sign, renew) and outcome (issued or the error code).",
		}, []string{"provisioner", "operation", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agentca", Name: "issuance_duration_seconds",
			Help:    "Time to answer a certificate request, by provisioner, operation and outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"provisioner", "operation", "outcome"}),
		renewalReused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "agentca", Name: "renewal_reused_total",
			Help: "Second renewals of one certificate onto another key: each revoked the certificate's lineage (keyCompromise).",
		}),
	}
	reg.MustRegister(m.issuances, m.latency, m.renewalReused)
	return m
}

func (m *Metrics) observe(provisioner, operation, outcome string, seconds float64) {
	m.issuances.WithLabelValues(provisioner, operation, outcome).Inc()
	m.latency.WithLabelValues(provisioner, operation, outcome).Observe(seconds)
}
