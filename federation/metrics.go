package federation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agentca_federation_* series, labelled by trust domain.
type metrics struct {
	fetches *prometheus.CounterVec
	stale   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, f *Federation) *metrics {
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentca_federation_fetches_total",
			Help: "Fetches of federated trust domains' bundles, by trust domain and result (ok, error)."}, []string{"trust_domain", "result"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agentca_federation_bundle_stale",
			Help: "1 while a federated trust domain's bundle could not be fetched for a whole refresh interval (the last good one is kept)."}, []string{"trust_domain"}),
	}
	var ages []prometheus.Collector
	for _, d := range f.domains {
		ages = append(ages, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentca_federation_bundle_age_seconds",
			Help:        "Seconds since a federated trust domain's bundle held was fetched (or bootstrapped); -1 before any.",
			ConstLabels: prometheus.Labels{"trust_domain": d.td.Name()}}, func() float64 {
			if at := d.fetchedAt(); !at.IsZero() {
				return time.Since(at).Seconds()
			}
			return -1
		}))
	}
	for _, d := range f.domains {
		m.stale.WithLabelValues(d.td.Name()).Set(0)
		m.fetches.WithLabelValues(d.td.Name(), "ok")
		m.fetches.WithLabelValues(d.td.Name(), "error")
	}
	if reg != nil {
		reg.MustRegister(m.fetches, m.stale)
		reg.MustRegister(ages...)
	}
	return m
}

func (m *metrics) observe(td string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.fetches.WithLabelValues(td, result).Inc()
}
