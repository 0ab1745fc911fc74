package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metrics is one scrape of /metrics: each series line ("name{labels}")
// with its value.
type metrics map[string]float64

func scrape(t *testing.T, c *testCA) metrics {
	t.Helper()
	resp, err := http.Get("http://" + c.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	m := metrics{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// sum adds the series of name whose labels contain each of labels
// (`status="good"`); ok is false when there is none.
func (m metrics) sum(name string, labels ...string) (total float64, ok bool) {
	for k, v := range m {
		n, l, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		match := true
		for _, want := range labels {
			match = match && strings.Contains(l, want)
		}
		if match {
			total, ok = total+v, true
		}
	}
	return total, ok
}

// families lists the agentca_* metric names (histogram series folded).
func (m metrics) families() map[string]bool {
	out := map[string]bool{}
	for k := range m {
		n, _, _ := strings.Cut(k, "{")
		if !strings.HasPrefix(n, "agentca_") {
			continue
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suf); ok && m.hasHistogram(base) {
				n = base
			}
		}
		out[n] = true
	}
	return out
}

func (m metrics) hasHistogram(base string) bool {
	_, ok := m.sum(base + "_bucket")
	return ok
}

// documentedMetrics reads the metric table of docs/api.md.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	sec := string(b)
	i := strings.Index(sec, "## `GET /metrics`")
	if i < 0 {
		t.Fatal("docs/api.md has no GET /metrics section")
	}
	sec = sec[i:]
	if j := strings.Index(sec[3:], "\n## "); j >= 0 {
		sec = sec[:j+3]
	}
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(agentca_[a-z_]+)` \\|").FindAllStringSubmatch(sec, -1) {
		names = append(names, m[1])
	}
	if len(names) < 15 {
		t.Fatalf("docs/api.md lists %d metrics; the table is not what this test reads", len(names))
	}
	return names
}

// TestMetricsEndToEnd: /metrics on a real daemon exposes every metric
// docs/api.md lists (and nothing it does not), and each moves with the
// action it counts: an enrollment, access tokens issued and refused, OCSP
// answers (the second from the cache), a revocation and the CRL it
// rebuilds.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	c := newTokenCA(t)
	c.start()
	before := scrape(t, c)
	// What is there from the start: certificate expiries, the first CRL,
	// the log.
	for _, kind := range []string{"root", "issuing", "ocsp_responder", "server"} {
		v, ok := before.sum("agentca_certificate_expiry_seconds", `kind="`+kind+`"`)
		if !ok || v <= 0 {
			t.Errorf("agentca_certificate_expiry_seconds{kind=%q} = %v (present %v), want > 0", kind, v, ok)
		}
	}
	if v, ok := before.sum("agentca_crl_builds_total"); !ok || v < 1 {
		t.Errorf("agentca_crl_builds_total = %v, want the first build", v)
	}
	if v, ok := before.sum("agentca_crl_bytes"); !ok || v <= 0 {
		t.Errorf("agentca_crl_bytes = %v, want the CRL's size", v)
	}

	dir := filepath.Join(t.TempDir(), "a")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), dir); r.code != 0 {
		t.Fatalf("enroll:\n%s", r)
	}
	tokenGet(t, c, dir, "--scope", "tools.read", "--resource", "https://tools.example.org")
	if r := runCLI(t, "token", "get", "--ca", c.URL, "--out", dir, "--scope", "tools.delete", "--resource", "https://tools.example.org"); r.code != 1 {
		t.Fatalf("an unknown scope:\n%s", r)
	}
	for range 2 {
		if r := runCLI(t, "ocsp", "--cert", filepath.Join(dir, "cert.pem")); r.code != 0 {
			t.Fatalf("ocsp:\n%s", r)
		}
	}
	serial := c.certs("spiffe://example.org/agent/a")[0].Serial
	mustRun(t, "revoke", "--dir", c.Dir, "--serial", serial, "--reason", "keyCompromise")
	// The CRL follows the revocation within ~100 ms; OCSP at once.
	eventually(t, 10*time.Second, 50*time.Millisecond, "the CRL to list the revocation", func() bool {
		v, _ := scrape(t, c).sum("agentca_crl_entries")
		return v >= 1
	})
	if r := runCLI(t, "ocsp", "--cert", filepath.Join(dir, "cert.pem")); r.code == 0 {
		t.Fatalf("ocsp after the revocation said good:\n%s", r)
	}
	after := scrape(t, c)

	moved := []struct {
		name   string
		labels []string
		by     float64 // at least
	}{
		{"agentca_issuance_total", []string{`operation="sign"`, `outcome="issued"`}, 1},
		{"agentca_access_tokens_total", []string{`outcome="issued"`}, 1},
		{"agentca_access_tokens_total", []string{`outcome="refused"`}, 1},
		{"agentca_refusals_total", []string{`code="invalid_scope"`}, 1},
		{"agentca_ocsp_responses_total", []string{`status="good"`}, 2},
		{"agentca_ocsp_responses_total", []string{`status="revoked"`}, 1},
		{"agentca_ocsp_cache_hits_total", nil, 1},
		{"agentca_revocations_total", []string{`reason="keyCompromise"`}, 1},
		{"agentca_crl_builds_total", nil, 1},
		{"agentca_crl_entries", nil, 1},
		{"agentca_store_commit_writes_count", nil, 2},
		{"agentca_store_commit_writes_sum", nil, 3},
		{"agentca_store_commit_duration_seconds_count", nil, 2},
		{"agentca_log_size", nil, 1},
	}
	for _, m := range moved {
		b, _ := before.sum(m.name, m.labels...)
		a, ok := after.sum(m.name, m.labels...)
		if !ok || a-b < m.by {
			t.Errorf("%s%v: %v → %v, want it up by at least %v", m.name, m.labels, b, a, m.by)
		}
	}
	if v, ok := after.sum("agentca_log_sth_age_seconds"); !ok || v < 0 || v > 600 {
		t.Errorf("agentca_log_sth_age_seconds = %v (present %v)", v, ok)
	}
	if v, ok := after.sum("agentca_crl_age_seconds"); !ok || v < 0 || v > 3600 {
		t.Errorf("agentca_crl_age_seconds = %v (present %v)", v, ok)
	}

	// docs/api.md lists exactly what is exposed (etcd's only on etcd).
	exposed := after.families()
	var missing, undocumented []string
	documented := map[string]bool{}
	for _, n := range documentedMetrics(t) {
		documented[n] = true
		if !exposed[n] && !strings.HasPrefix(n, "agentca_etcd_") && !strings.HasPrefix(n, "agentca_federation_") {
			missing = append(missing, n)
		}
	}
	for n := range exposed {
		if !documented[n] {
			undocumented = append(undocumented, n)
		}
	}
	sort.Strings(missing)
	sort.Strings(undocumented)
	if len(missing) > 0 || len(undocumented) > 0 {
		t.Errorf("docs/api.md and /metrics disagree: listed but not exposed %v; exposed but not listed %v", missing, undocumented)
	}
	if t.Failed() {
		for k, v := range after {
			if strings.HasPrefix(k, "agentca_") && !strings.Contains(k, "_bucket") {
				fmt.Fprintf(os.Stderr, "%s %v\n", k, v)
			}
		}
	}
}

// The Grafana dashboard queries only metrics docs/api.md lists, so it
// does not rot when a metric is renamed.
func TestGrafanaDashboardMetrics(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "agentca.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/agentca.json: %v", err)
	}
	documented := map[string]bool{}
	for _, n := range documentedMetrics(t) {
		documented[n] = true
	}
	name := regexp.MustCompile(`agentca_[a-z_]+`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				queried++
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suf); ok && documented[b] {
						base = b
					}
				}
				if !documented[base] {
					t.Errorf("the dashboard queries %s, which docs/api.md does not list", n)
				}
			}
		}
	}
	if queried == 0 {
		t.Fatal("the dashboard queries no agentca metric")
	}
}
