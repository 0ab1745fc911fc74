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
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "agentca_federation_bundle_oldest_age_seconds",
		Help: "Age of the oldest federated trust domain bundle held (since it was last fetched or bootstrapped)."}, func() float64 {
		var oldest time.Duration
		for _, d := range f.domains {
			if at := d.fetchedAt(); !at.IsZero() {
				oldest = max(oldest, time.Since(at))
			}
		}
		return oldest.Seconds()
	})
	for _, d := range f.domains {
		m.stale.WithLabelValues(d.td.Name()).Set(0)
		m.fetches.WithLabelValues(d.td.Name(), "ok")
		m.fetches.WithLabelValues(d.td.Name(), "error")
	}
	if reg != nil {
		reg.MustRegister(m.fetches, m.stale, age)
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
