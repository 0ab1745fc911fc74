package main

// compare.go is `make bench-compare`: the same load generator against
// agentca and step-ca (badger and bbolt), phase by phase, interleaved over
// several rounds, with one table of rates, latencies and server CPU.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// The markers of the comparison's section in docs/benchmarks.md.
const (
	compareBegin = "<!-- agentca-bench-compare:begin -->"
	compareEnd   = "<!-- agentca-bench-compare:end -->"
)

// target is one CA under comparison, seen through what the phases need.
type target struct {
	name   string
	base   string // https://127.0.0.1:port
	cpu    func() float64
	tls    func(cert func() *tls.Certificate) *http.Transport
	bodies func(ctx context.Context, n int) ([][]byte, error) // one-time sign request bodies
	sign   string                                             // sign path
	renew  string                                             // renewal keeping the key: path
	rekey  string                                             // renewal with a fresh key (CSR): path
	// csr picks the CSR of k this CA takes (agentca names nothing in a
	// CSR; step-ca's JWK provisioner wants the token's names).
	csr func(k stepKey) string
	// rekeyBody is the body of a renewal with the CSR csrPEM; renewBody
	// the body of one keeping the key.
	rekeyBody func(csrPEM string) []byte
	renewBody []byte
	// parse turns an answer into the holder's new TLS certificate, the
	// key being key; verify says whether to check the chain too.
	parse func(b []byte, key crypto.Signer, verify bool) (*tls.Certificate, error)
	// holders are the enrolled certificates the renewal phases renew,
	// one per worker.
	holders []*holder
	stop    func()
}

// holder is one enrolled certificate the renewal phases renew, and the
// index in the key pool of its key.
type holder struct {
	cert atomic.Pointer[tls.Certificate]
	key  int
}

// comparePaths are the measured paths, in table order.
var comparePaths = []struct{ key, label string }{
	{"rekey", "renew with a fresh key (CSR), c=%d"},
	{"renew", "renew keeping the key, c=%d"},
	{"sign64", "sign, one-time tokens, c=64"},
	{"sign1", "sign, one-time tokens, c=1"},
}

type compareResult struct {
	path, target string
	round        int
	ph           *phase
}

// runCompare starts agentca and step-ca with each database, enrolls the
// renewal holders on each, then runs every path on every target, one
// after the other, for opts.rounds rounds.
func runCompare(ctx context.Context, opts options) (string, error) {
	dir, err := os.MkdirTemp("", "agentca-compare-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	keys, err := newStepKeys(opts.csrPool)
	if err != nil {
		return "", err
	}
	var targets []*target
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	at, versions, err := agentcaTarget(ctx, opts, dir, keys)
	if err != nil {
		return "", fmt.Errorf("agentca: %w", err)
	}
	targets = append(targets, at)
	for _, db := range []string{"badgerv2", "bbolt"} {
		logf("starting step-ca (%s)", db)
		s, err := startStepCA(ctx, opts.stepBin, opts.stepCABin, dir, db)
		if err != nil {
			return "", err
		}
		t := stepTarget(s, keys)
		targets = append(targets, t)
		versions = append(versions, fmt.Sprintf("step-ca (%s): %s; step CLI %s", db, s.version, moduleVersion(opts.stepBin)))
	}
	for _, t := range targets {
		if err := t.enroll(ctx, opts.renewConc, keys); err != nil {
			return "", fmt.Errorf("%s: enroll: %w", t.name, err)
		}
	}
	var results []compareResult
	for round := 1; round <= opts.rounds; round++ {
		for _, p := range comparePaths {
			for _, t := range targets {
				if ctx.Err() != nil {
					return "", ctx.Err()
				}
				ph, err := t.run(ctx, p.key, opts, keys)
				if err != nil {
					return "", fmt.Errorf("%s %s: %w", t.name, p.key, err)
				}
				logf("round %d %-7s %-28s %7.0f/s p50 %-8s p99 %-8s %4.0f µs server CPU, %d errors",
					round, p.key, t.name, ph.rate(), fmtDur(ph.pct(0.5)), fmtDur(ph.pct(0.99)), cpuPer(ph), ph.errors)
				if ph.errors > 0 {
					return "", fmt.Errorf("%s %s: %d errors: %s", t.name, p.key, ph.errors, strings.Join(ph.firstErrors, "; "))
				}
				results = append(results, compareResult{p.key, t.name, round, ph})
			}
		}
	}
	return compareMarkdown(opts, versions, targets, results), nil
}

func cpuPer(ph *phase) float64 {
	if ph.ok == 0 {
		return 0
	}
	return ph.daemonCPU / float64(ph.ok) * 1e6
}

// agentcaTarget starts `agentca serve` as the other phases do; one-time
// sign requests use join tokens made through the admin socket.
func agentcaTarget(ctx context.Context, opts options, dir string, keys []stepKey) (*target, []string, error) {
	logf("starting agentca")
	d, err := startDaemon(ctx, opts, dir)
	if err != nil {
		return nil, nil, err
	}
	lg, err := newLoad(ctx, d, opts)
	if err != nil {
		d.kill()
		return nil, nil, err
	}
	t := &target{name: "agentca (bbolt)", base: d.https, cpu: d.cpuSeconds, sign: "/v1/sign",
		renew: "/v1/renew", rekey: "/v1/renew", renewBody: []byte(`{}`), stop: d.kill}
	t.tls = func(cert func() *tls.Certificate) *http.Transport {
		return certTransport(lg.newTransport(1, nil), cert)
	}
	t.bodies = func(ctx context.Context, n int) ([][]byte, error) {
		if err := lg.ensureTokens(ctx, n); err != nil {
			return nil, err
		}
		toks := lg.takeTokens(n)
		out := make([][]byte, len(toks))
		for i, tok := range toks {
			out[i], _ = json.Marshal(map[string]string{"provisioner": "join", "token": tok, "csr": keys[i%len(keys)].plainCSR})
		}
		return out, nil
	}
	t.csr = func(k stepKey) string { return k.plainCSR }
	t.rekeyBody = func(csr string) []byte { b, _ := json.Marshal(map[string]string{"csr": csr}); return b }
	t.parse = func(b []byte, key crypto.Signer, verify bool) (*tls.Certificate, error) {
		leaf, chain, err := lg.checkSigned(b, "", key.Public())
		if err != nil {
			return nil, err
		}
		tc := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
		for _, c := range chain {
			tc.Certificate = append(tc.Certificate, c.Raw)
		}
		return tc, nil
	}
	v := "agentca: " + d.info.binary
	if d.info.revision != "" {
		v += " at " + d.info.revision
	}
	return t, []string{v}, nil
}

// stepTarget drives step-ca's API: /1.0/sign with a JWK provisioner's
// one-time token, /1.0/renew and /1.0/rekey over mTLS.
func stepTarget(s *stepCA, keys []stepKey) *target {
	name := "step-ca (" + strings.TrimSuffix(s.db, "v2") + ")"
	t := &target{name: name, base: s.url, cpu: s.cpuSeconds, sign: "/1.0/sign",
		renew: "/1.0/renew", rekey: "/1.0/rekey", renewBody: nil, stop: s.stop}
	t.tls = func(cert func() *tls.Certificate) *http.Transport {
		return certTransport(&http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, IdleConnTimeout: time.Minute,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}, DisableCompression: true}, cert)
	}
	t.bodies = func(ctx context.Context, n int) ([][]byte, error) {
		toks, err := s.tokens(n)
		if err != nil {
			return nil, err
		}
		out := make([][]byte, n)
		for i, tok := range toks {
			out[i], _ = json.Marshal(map[string]string{"csr": keys[i%len(keys)].csrPEM, "ott": tok})
		}
		return out, nil
	}
	t.csr = func(k stepKey) string { return k.csrPEM }
	t.rekeyBody = func(csr string) []byte { b, _ := json.Marshal(map[string]string{"csr": csr}); return b }
	t.parse = func(b []byte, key crypto.Signer, _ bool) (*tls.Certificate, error) { return s.certificate(b, key) }
	return t
}

// certTransport is tr presenting cert() as the client certificate (nil:
// none).
func certTransport(tr *http.Transport, cert func() *tls.Certificate) *http.Transport {
	if cert != nil {
		tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert(), nil }
	}
	return tr
}

// enroll signs one certificate per renewal worker, key i from keys.
func (t *target) enroll(ctx context.Context, n int, keys []stepKey) error {
	bodies, err := t.bodies(ctx, n)
	if err != nil {
		return err
	}
	if len(bodies) < n {
		return fmt.Errorf("%d one-time tokens for %d holders", len(bodies), n)
	}
	hc := &http.Client{Transport: t.tls(nil), Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	t.holders = make([]*holder, n)
	for i := range n {
		key := keys[i%len(keys)].key
		var tc *tls.Certificate
		if _, err := post(ctx, hc, t.base+t.sign, bodies[i], func(b []byte) error {
			var err error
			tc, err = t.parse(b, key, true)
			return err
		}); err != nil {
			return err
		}
		t.holders[i] = &holder{key: i % len(keys)}
		t.holders[i].cert.Store(tc)
	}
	return nil
}

// run measures one path on t for opts.duration.
func (t *target) run(ctx context.Context, path string, opts options, keys []stepKey) (*phase, error) {
	switch path {
	case "sign64":
		return t.signPhase(ctx, 64, opts.duration, 8000)
	case "sign1":
		return t.signPhase(ctx, 1, opts.duration, 2000)
	case "renew":
		return t.renewPhase(ctx, false, opts.duration, keys), nil
	case "rekey":
		return t.renewPhase(ctx, true, opts.duration, keys), nil
	}
	return nil, errors.New("unknown path " + path)
}

// signPhase POSTs one-time sign requests at concurrency c for dur, at
// most maxRate*dur of them (the bodies are made beforehand, outside the
// measured window).
func (t *target) signPhase(ctx context.Context, c int, dur time.Duration, maxRate float64) (*phase, error) {
	bodies, err := t.bodies(ctx, int(maxRate*dur.Seconds()))
	if err != nil {
		return nil, err
	}
	ph := &phase{name: fmt.Sprintf("%s sign c=%d", t.name, c), kind: "sign"}
	tr := t.tls(nil)
	tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = c, c
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	warmConns(ctx, hc, t.base, c)
	var next atomic.Int64
	var out atomic.Bool
	runtime.GC()
	deadline := time.Now().Add(dur)
	measureCPU(ph, c, t.cpu, func(w int, r *result) {
		for ctx.Err() == nil && time.Now().Before(deadline) {
			i := int(next.Add(1) - 1)
			if i >= len(bodies) {
				out.Store(true)
				return
			}
			lat, err := post(ctx, hc, t.base+t.sign, bodies[i], nil)
			if err != nil {
				r.fail(err.Error())
				continue
			}
			r.lat = append(r.lat, lat)
		}
	})
	ph.stopReason = "time"
	if out.Load() {
		ph.stopReason = "count"
	}
	return ph, nil
}

// renewPhase has each holder renew its newest certificate over mTLS, on
// a new connection each time (the new certificate is the next client
// certificate), keeping the key or with a fresh one from keys.
func (t *target) renewPhase(ctx context.Context, fresh bool, dur time.Duration, keys []stepKey) *phase {
	ph := &phase{name: t.name + " renew", kind: "renew"}
	c := len(t.holders)
	clients := make([]*http.Client, c)
	for i, h := range t.holders {
		clients[i] = &http.Client{Transport: t.tls(h.cert.Load), Timeout: 30 * time.Second}
	}
	runtime.GC()
	deadline := time.Now().Add(dur)
	measureCPU(ph, c, t.cpu, func(w int, r *result) {
		hc, h := clients[w], t.holders[w]
		defer hc.CloseIdleConnections()
		for n := 0; ctx.Err() == nil && time.Now().Before(deadline); n++ {
			key := h.cert.Load().PrivateKey.(crypto.Signer)
			url, body, next := t.base+t.renew, t.renewBody, h.key
			if fresh {
				// The next key of the pool: never the current one.
				next = (h.key + 1) % len(keys)
				k := keys[next]
				key, url, body = k.key, t.base+t.rekey, t.rekeyBody(t.csr(k))
			}
			lat, err := post(ctx, hc, url, body, func(b []byte) error {
				tc, err := t.parse(b, key, n == 0)
				if err == nil {
					h.cert.Store(tc)
					h.key = next
				}
				return err
			})
			if err != nil {
				r.fail(err.Error())
				continue
			}
			r.lat = append(r.lat, lat)
			hc.CloseIdleConnections()
		}
	})
	ph.stopReason = "time"
	return ph
}

// compareMarkdown is the report: per path, per target, the median over
// the rounds of rate, p50, p99 and server CPU per request, and each
// step-ca's rate as a ratio of agentca's.
func compareMarkdown(opts options, versions []string, targets []*target, results []compareResult) string {
	var b bytes.Buffer
	m := newReport(opts).machine
	b.WriteString(compareBegin + "\n")
	fmt.Fprintf(&b, "### agentca against step-ca, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "`%s`: %d CPUs (%s), %s; %d rounds of %s per phase, interleaved; the load generator on the same machine.\n\n",
		commandLine(), m.cpus, m.model, m.goVersion, opts.rounds, opts.duration)
	for _, v := range versions {
		fmt.Fprintf(&b, "- %s\n", v)
	}
	b.WriteString("\nMedian of the rounds: requests/s, p50, p99, server CPU per request. The ratio is agentca's rate over the other's.\n\n")
	b.WriteString("| path |")
	for _, t := range targets {
		fmt.Fprintf(&b, " %s |", t.name)
	}
	for _, t := range targets[1:] {
		fmt.Fprintf(&b, " ÷ %s |", t.name)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|", 2*len(targets)-1))
	b.WriteString("\n")
	for _, p := range comparePaths {
		fmt.Fprintf(&b, "| %s |", strings.ReplaceAll(p.label, "%d", fmt.Sprint(opts.renewConc)))
		rates := make([]float64, len(targets))
		for i, t := range targets {
			var phs []*phase
			for _, r := range results {
				if r.path == p.key && r.target == t.name {
					phs = append(phs, r.ph)
				}
			}
			if len(phs) == 0 {
				b.WriteString(" — |")
				continue
			}
			rates[i] = median(phs, func(ph *phase) float64 { return ph.rate() })
			fmt.Fprintf(&b, " %s/s, %s, %s, %.0f µs |", fmtInt(rates[i]),
				fmtDur(time.Duration(median(phs, func(ph *phase) float64 { return float64(ph.pct(0.5)) }))),
				fmtDur(time.Duration(median(phs, func(ph *phase) float64 { return float64(ph.pct(0.99)) }))),
				median(phs, cpuPer))
		}
		for i := range targets[1:] {
			if rates[i+1] > 0 {
				fmt.Fprintf(&b, " %.2f× |", rates[0]/rates[i+1])
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nEvery round:\n\n| round | path | CA | rate | p50 | p99 | server CPU |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %s | %s | %s/s | %s | %s | %.0f µs |\n", r.round, r.path, r.target, fmtInt(r.ph.rate()),
			fmtDur(r.ph.pct(0.5)), fmtDur(r.ph.pct(0.99)), cpuPer(r.ph))
	}
	b.WriteString("\n" + compareEnd + "\n")
	return b.String()
}

func median(phs []*phase, f func(*phase) float64) float64 {
	v := make([]float64, len(phs))
	for i, ph := range phs {
		v[i] = f(ph)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
