package daemon

import (
	"crypto/x509"
	"encoding/hex"
	"time"

	"github.com/agentca/agentca/internal/anchors"
	"github.com/agentca/agentca/ocsp"
	"github.com/prometheus/client_golang/prometheus"
)

// opsCollector exports, at each scrape, what the daemon holds: each
// issuer's CRL (builds, size, age, entries) and the seconds left before
// each certificate the CA itself depends on expires (roots, issuing CAs,
// OCSP responder certificates, the HTTPS server certificate). docs/api.md
// lists them.
type opsCollector struct {
	anch      *anchors.Runtime
	responder *ocsp.Responder
	server    *serverCerts
	now       func() time.Time

	crlBuilds, crlBytes, crlAge, crlEntries, expiry *prometheus.Desc
}

func newOpsCollector(anch *anchors.Runtime, responder *ocsp.Responder, server *serverCerts) *opsCollector {
	issuer := []string{"issuer"}
	return &opsCollector{anch: anch, responder: responder, server: server, now: time.Now,
		crlBuilds:  prometheus.NewDesc("agentca_crl_builds_total", "CRLs built and published, by issuer (hex SKI) since its CRL publisher started.", issuer, nil),
		crlBytes:   prometheus.NewDesc("agentca_crl_bytes", "Size of the current CRL (DER), by issuer.", issuer, nil),
		crlAge:     prometheus.NewDesc("agentca_crl_age_seconds", "Age of the current CRL (since its thisUpdate), by issuer.", issuer, nil),
		crlEntries: prometheus.NewDesc("agentca_crl_entries", "Revoked certificates listed in the current CRL, by issuer.", issuer, nil),
		expiry: prometheus.NewDesc("agentca_certificate_expiry_seconds",
			"Seconds until the certificate expires, by kind (root, issuing, ocsp_responder, server) and subject key identifier (hex).",
			[]string{"kind", "ski"}, nil),
	}
}

func (c *opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.crlBuilds, c.crlBytes, c.crlAge, c.crlEntries, c.expiry} {
		ch <- d
	}
}

func (c *opsCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for ski, p := range c.anch.Publishers() {
		ch <- prometheus.MustNewConstMetric(c.crlBuilds, prometheus.CounterValue, float64(p.Builds()), ski)
		if cur := p.Current(); cur != nil {
			ch <- prometheus.MustNewConstMetric(c.crlBytes, prometheus.GaugeValue, float64(len(cur.DER)), ski)
			ch <- prometheus.MustNewConstMetric(c.crlAge, prometheus.GaugeValue, now.Sub(cur.ThisUpdate).Seconds(), ski)
			ch <- prometheus.MustNewConstMetric(c.crlEntries, prometheus.GaugeValue, float64(cur.Entries), ski)
		}
	}
	seen := map[string]bool{}
	expires := func(kind string, cert *x509.Certificate) {
		if cert == nil {
			return
		}
		ski := hex.EncodeToString(cert.SubjectKeyId)
		if seen[kind+ski] {
			return
		}
		seen[kind+ski] = true
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, cert.NotAfter.Sub(now).Seconds(), kind, ski)
	}
	if t := c.anch.Trust(); t != nil {
		for _, r := range t.Roots {
			expires("root", r)
		}
		for _, iss := range t.Issuers {
			expires("issuing", iss.Cert)
		}
	}
	if c.responder != nil {
		for _, s := range c.responder.Signers() {
			expires("ocsp_responder", s.Cert)
		}
	}
	if cur := c.server.cur.Load(); cur != nil {
		expires("server", cur.Leaf)
	}
}

// commitMetrics are the store committer's transactions: how long each
// took (fsync or etcd round trip included) and how many writes it carried.
type commitMetrics struct {
	latency, size prometheus.Histogram
}

func newCommitMetrics() *commitMetrics {
	return &commitMetrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentca_store_commit_duration_seconds",
			Help:    "Duration of each store write transaction the committer made (bbolt: with its fsync; etcd: the Txn round trip).",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1},
		}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentca_store_commit_writes",
			Help:    "Writes (issuances, revocations, token uses...) grouped in each store transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
	}
}

func (m *commitMetrics) observe(took time.Duration, writes int) {
	m.latency.Observe(took.Seconds())
	m.size.Observe(float64(writes))
}
