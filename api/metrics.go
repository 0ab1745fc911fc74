package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the daemon's Prometheus collectors.
type Metrics struct {
	issuances *prometheus.CounterVec
	latency   *prometheus.HistogramVec
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
	}
	reg.MustRegister(m.issuances, m.latency)
	return m
}

func (m *Metrics) observe(provisioner, operation, outcome string, seconds float64) {
	m.issuances.WithLabelValues(provisioner, operation, outcome).Inc()
	m.latency.WithLabelValues(provisioner, operation, outcome).Observe(seconds)
}
