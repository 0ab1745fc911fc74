package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load holds the client side: the CSR pool, the unused join tokens and
// the HTTP clients.
type load struct {
	d      *daemon
	opts   options
	csrs   [][]byte        // JSON string literals of PEM CSRs, ready to splice
	keys   []crypto.Signer // the CSRs' keys (renewal with a fresh key)
	tokens []string        // unused join tokens, consumed from next
	next   int
	chunks int
}

// phase is the result of one load phase.
type phase struct {
	name        string
	kind        string // "sign" or "renew"
	concurrency int
	ok          int
	errors      int
	firstErrors []string
	elapsed     time.Duration
	lat         []time.Duration // sorted, successes only
	daemonCPU   float64         // seconds
	clientCPU   float64         // seconds, this process
	otherCPU    float64         // seconds: other processes, kernel interrupts
	idleCPU     float64         // seconds the machine's CPUs were idle
	stopReason  string
	profile     string
}

func (p *phase) rate() float64 {
	if p.elapsed <= 0 {
		return 0
	}
	return float64(p.ok) / p.elapsed.Seconds()
}

// pct returns the q-quantile of the successful requests' latency.
func (p *phase) pct(q float64) time.Duration {
	if len(p.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(p.lat)) + 0.5)
	return p.lat[min(max(i-1, 0), len(p.lat)-1)]
}

func newLoad(ctx context.Context, d *daemon, opts options) (*load, error) {
	l := &load{d: d, opts: opts}
	logf("generating %d P-256 keys and CSRs (reused across requests)", opts.csrPool)
	l.csrs = make([][]byte, opts.csrPool)
	l.keys = make([]crypto.Signer, opts.csrPool)
	for i := range l.csrs {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		csr, err := makeCSR(key)
		if err != nil {
			return nil, err
		}
		lit, _ := json.Marshal(csr)
		l.csrs[i] = lit
		l.keys[i] = key
	}
	return l, ctx.Err()
}

func makeCSR(key crypto.Signer) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func (l *load) close() {}

// ensureTokens makes sure at least n unused tokens are on hand, creating
// them 10,000 per `agentca token create` call.
func (l *load) ensureTokens(ctx context.Context, n int) error {
	const chunk = 10_000
	missing := n - (len(l.tokens) - l.next)
	if missing <= 0 {
		return nil
	}
	start := time.Now()
	created := 0
	for missing > 0 {
		c := min(missing, chunk)
		l.chunks++
		toks, err := l.d.createTokens(ctx, fmt.Sprintf("spiffe://%s/agent/bench-%d", trustDomain, l.chunks), c)
		if err != nil {
			return err
		}
		l.tokens = append(l.tokens, toks...)
		missing -= c
		created += c
	}
	logf("created %d join tokens in %s", created, time.Since(start).Round(time.Millisecond))
	return nil
}

// takeTokens hands out the next n unused tokens (fewer if short).
func (l *load) takeTokens(n int) []string {
	n = min(n, len(l.tokens)-l.next)
	t := l.tokens[l.next : l.next+n]
	l.next += n
	return t
}

// newTransport is one keep-alive HTTP/1.1 transport trusting roots.pem.
// HTTP/2 is off: each worker is one agent with its own connection.
func (l *load) newTransport(conns int, cert *tls.Certificate) *http.Transport {
	tc := &tls.Config{RootCAs: l.d.roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Transport{
		TLSClientConfig:     tc,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		ForceAttemptHTTP2:   false,
		DisableCompression:  true,
	}
}

// result collects one worker's outcomes.
type result struct {
	lat    []time.Duration
	errors int
	first  []string
}

func (r *result) fail(msg string) {
	r.errors++
	if len(r.first) < 3 {
		r.first = append(r.first, msg)
	}
}

// post sends one JSON request that must answer 201 and reports the
// status and body on error.
func post(ctx context.Context, hc *http.Client, url string, body []byte, verify func([]byte) error) (time.Duration, error) {
	return send(ctx, hc, url, "application/json", http.StatusCreated, body, verify)
}

// send POSTs body as contentType; any status but want is an error, and
// verify (when set) checks the body of a wanted answer. It returns the
// time from sending to reading the whole answer.
func send(ctx context.Context, hc *http.Client, url, contentType string, want int, body []byte, verify func([]byte) error) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", contentType)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	return readAnswer(resp, t0, want, verify)
}

// answerError is an error of an answer (its status or its content), not
// of the connection it came on.
type answerError struct{ err error }

func (e answerError) Error() string { return e.err.Error() }
func (e answerError) Unwrap() error { return e.err }

// readAnswer reads resp's body (whole when check is set or the status is
// not want; else discarded) and closes it. It returns the time since t0,
// an error reading the body, or an answerError for a status other than
// want or a body check (when set) that fails.
func readAnswer(resp *http.Response, t0 time.Time, want int, check func([]byte) error) (time.Duration, error) {
	var b []byte
	var err error
	if check != nil || resp.StatusCode != want {
		b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	lat := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != want {
		return 0, answerError{fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b[:min(len(b), 300)])))}
	}
	if check != nil {
		if err := check(b); err != nil {
			return 0, answerError{fmt.Errorf("%d but bad response: %w", want, err)}
		}
	}
	return lat, nil
}

// signResponse is the part of SignResponse the checks read.
type signResponse struct {
	Certificate string   `json:"certificate"`
	Chain       []string `json:"chain"`
	Serial      string   `json:"serial"`
	SPIFFEID    string   `json:"spiffe_id"`
}

// checkSigned parses a SignResponse and verifies the leaf: it chains to
// roots.pem, names wantID (when set) and carries pub (when set).
func (l *load) checkSigned(b []byte, wantID string, pub crypto.PublicKey) (*x509.Certificate, []*x509.Certificate, error) {
	var sr signResponse
	if err := json.Unmarshal(b, &sr); err != nil {
		return nil, nil, err
	}
	leaves, err := certPEMBlocks([]byte(sr.Certificate))
	if err != nil {
		return nil, nil, err
	}
	leaf := leaves[0]
	inter := x509.NewCertPool()
	var chain []*x509.Certificate
	for _, c := range sr.Chain {
		cs, err := certPEMBlocks([]byte(c))
		if err != nil {
			return nil, nil, err
		}
		for _, x := range cs {
			inter.AddCert(x)
			chain = append(chain, x)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: l.d.roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, nil, fmt.Errorf("leaf does not verify: %w", err)
	}
	if len(leaf.URIs) != 1 || (wantID != "" && leaf.URIs[0].String() != wantID) || sr.SPIFFEID != leaf.URIs[0].String() {
		return nil, nil, fmt.Errorf("leaf names %v, response says %q, want %q", leaf.URIs, sr.SPIFFEID, wantID)
	}
	if pub != nil {
		if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(pub) {
			return nil, nil, fmt.Errorf("leaf does not carry the expected key")
		}
	}
	return leaf, chain, nil
}

// warmConns opens n keep-alive connections (GET /health) so that the
// TLS handshakes fall outside the measured window.
func warmConns(ctx context.Context, hc *http.Client, url string, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
			if err != nil {
				return
			}
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
}

// measure runs work on c workers and fills in the phase's timing, CPU and
// latency. work(i) returns when worker i is done.
func (l *load) measure(ctx context.Context, ph *phase, c int, dur time.Duration, pprofURL, pprofDir string, work func(i int, r *result)) {
	prof := startProfile(ctx, pprofURL, pprofDir, ph.name, dur)
	measureCPU(ph, c, l.d.cpuSeconds, work)
	if prof != nil {
		ph.profile = prof.wait()
	}
	for _, m := range ph.firstErrors {
		logf("%s: error: %s", ph.name, m)
	}
}

// measureCPU runs work on c workers and fills in the phase's timing,
// latency and CPU, the server's CPU read by serverCPU (seconds so far).
func measureCPU(ph *phase, c int, serverCPU func() float64, work func(i int, r *result)) {
	results := make([]result, c)
	cpu0, self0 := serverCPU(), procCPU(os.Getpid())
	busy0, idle0 := machineCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range c {
		wg.Go(func() { work(i, &results[i]) })
	}
	wg.Wait()
	ph.elapsed = time.Since(start)
	ph.daemonCPU = serverCPU() - cpu0
	ph.clientCPU = procCPU(os.Getpid()) - self0
	busy1, idle1 := machineCPU()
	ph.otherCPU = max(0, busy1-busy0-ph.daemonCPU-ph.clientCPU)
	ph.idleCPU = idle1 - idle0
	ph.concurrency = c
	for i := range results {
		ph.ok += len(results[i].lat)
		ph.errors += results[i].errors
		ph.lat = append(ph.lat, results[i].lat...)
		for _, m := range results[i].first {
			if len(ph.firstErrors) < 5 {
				ph.firstErrors = append(ph.firstErrors, m)
			}
		}
	}
	slices.Sort(ph.lat)
}

// signPhase runs POST /v1/sign at concurrency c for at most dur, one
// fresh join token per request, never more requests than tokens.
func (l *load) signPhase(ctx context.Context, name string, c int, dur time.Duration, pprofURL, pprofDir string) *phase {
	ph := &phase{name: name, kind: "sign"}
	tokens := l.takeTokens(len(l.tokens) - l.next)
	used := l.signLoad(ctx, ph, c, dur, "join", tokens, pprofURL, pprofDir)
	// Unused tokens go back for the next phase.
	l.next -= len(tokens) - used
	return ph
}

// signLoad runs POST /v1/sign at concurrency c for at most dur with the
// given provisioner, one token per request, never more requests than
// tokens. It returns how many tokens it used; ph.stopReason says whether
// time (or ctx) or the tokens ended it.
func (l *load) signLoad(ctx context.Context, ph *phase, c int, dur time.Duration, provisioner string, tokens []string, pprofURL, pprofDir string) int {
	tr := l.newTransport(c, nil)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	warmConns(ctx, hc, l.d.https, c)
	url := l.d.https + "/v1/sign"
	var next atomic.Int64
	var checked atomic.Bool
	var outOfTokens atomic.Bool
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, c, dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 4096)
		var body bytes.Buffer
		for ctx.Err() == nil && time.Now().Before(deadline) {
			i := int(next.Add(1) - 1)
			if i >= len(tokens) {
				outOfTokens.Store(true)
				return
			}
			body.Reset()
			body.WriteString(`{"provisioner":"`)
			body.WriteString(provisioner)
			body.WriteString(`","token":"`)
			body.WriteString(tokens[i])
			body.WriteString(`","csr":`)
			body.Write(l.csrs[i%len(l.csrs)])
			body.WriteString(`}`)
			var verify func([]byte) error
			if !checked.Load() && checked.CompareAndSwap(false, true) {
				verify = func(b []byte) error { _, _, err := l.checkSigned(b, "", nil); return err }
			}
			lat, err := post(ctx, hc, url, body.Bytes(), verify)
			if err != nil {
				if ctx.Err() == nil {
					r.fail(err.Error())
				}
				continue
			}
			r.lat = append(r.lat, lat)
		}
	})
	ph.stopReason = "time"
	if outOfTokens.Load() {
		ph.stopReason = "tokens"
	}
	return min(int(next.Load()), len(tokens))
}

// agent is one enrolled workload for the renewal phase.
type agent struct {
	cert   *tls.Certificate
	id     string
	issuer *x509.Certificate // the issuing CA, first in the response's chain
	// renewed is the certificate of its last renewal (nil: cert): a
	// certificate renews once, so each renewal renews the last one.
	renewed atomic.Pointer[tls.Certificate]
}

// current is the agent's newest certificate.
func (a *agent) current() *tls.Certificate {
	if c := a.renewed.Load(); c != nil {
		return c
	}
	return a.cert
}

// renewedTo makes the leaf in a renewal's answer b (same key) the agent's
// certificate.
func (a *agent) renewedTo(b []byte) error {
	return a.renewedWith(b, nil)
}

// renewedWith makes the leaf in a renewal's answer b, for key (nil: the
// current key), the agent's certificate.
func (a *agent) renewedWith(b []byte, key crypto.Signer) error {
	var sr signResponse
	if err := json.Unmarshal(b, &sr); err != nil {
		return err
	}
	leaves, err := certPEMBlocks([]byte(sr.Certificate))
	if err != nil {
		return err
	}
	cur := a.current()
	priv := cur.PrivateKey
	if key != nil {
		if k, ok := leaves[0].PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(key.Public()) {
			return fmt.Errorf("the renewed leaf does not carry the CSR's key")
		}
		priv = key
	}
	next := &tls.Certificate{Certificate: append([][]byte{leaves[0].Raw}, cur.Certificate[1:]...), PrivateKey: priv, Leaf: leaves[0]}
	a.renewed.Store(next)
	return nil
}

// enroll gets one certificate each for n agents through /v1/sign.
func (l *load) enroll(ctx context.Context, n int) ([]*agent, error) {
	tokens := l.takeTokens(n)
	if len(tokens) < n {
		return nil, fmt.Errorf("only %d tokens for %d agents", len(tokens), n)
	}
	tr := l.newTransport(16, nil)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	// The certificate must outlive the renewal phase.
	ttl := "5m"
	if l.opts.duration > 4*time.Minute {
		ttl = "1h"
	}
	out := make([]*agent, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				errs[i] = err
				return
			}
			csr, err := makeCSR(key)
			if err != nil {
				errs[i] = err
				return
			}
			body, _ := json.Marshal(map[string]string{"provisioner": "join", "token": tokens[i], "csr": csr, "ttl": ttl})
			var leaf *x509.Certificate
			var chain []*x509.Certificate
			_, err = post(ctx, hc, l.d.https+"/v1/sign", body, func(b []byte) error {
				var err error
				leaf, chain, err = l.checkSigned(b, "", key.Public())
				return err
			})
			if err != nil {
				errs[i] = err
				return
			}
			tc := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
			for _, c := range chain {
				tc.Certificate = append(tc.Certificate, c.Raw)
			}
			var issuer *x509.Certificate
			for _, c := range chain {
				if bytes.Equal(c.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(c) == nil {
					issuer = c
					break
				}
			}
			if issuer == nil {
				errs[i] = fmt.Errorf("the sign response's chain holds no issuer of the leaf")
				return
			}
			out[i] = &agent{cert: tc, id: leaf.URIs[0].String(), issuer: issuer}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// agentClients gives each agent its own keep-alive mTLS client, with its
// connection opened, presenting the agent's current certificate (a.cert
// when the connection is made); close releases them.
func (l *load) agentClients(ctx context.Context, agents []*agent) (clients []*http.Client, close func()) {
	clients = make([]*http.Client, len(agents))
	trs := make([]*http.Transport, len(agents))
	for i, a := range agents {
		trs[i] = l.newTransport(1, nil)
		trs[i].TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.current(), nil }
		clients[i] = &http.Client{Transport: trs[i], Timeout: 30 * time.Second}
	}
	var wg sync.WaitGroup
	for _, hc := range clients {
		wg.Go(func() { warmConns(ctx, hc, l.d.https, 1) })
	}
	wg.Wait()
	return clients, func() {
		for _, tr := range trs {
			tr.CloseIdleConnections()
		}
	}
}

// renewPhase has each agent renew over mTLS for at most dur and at most
// maxRate*dur renewals in all: with an empty JSON body {} (renew keeping
// the key), or, fresh, with a CSR for a key from the pool (the agent's
// default), taking that key for its next renewal. A certificate renews
// once (a second renewal is a retry, answered with the same child), so
// each renewal renews the previous one's certificate on a new
// connection, as an agent does.
func (l *load) renewPhase(ctx context.Context, name string, agents []*agent, fresh bool, dur time.Duration, maxRate float64, pprofURL, pprofDir string) *phase {
	ph := &phase{name: name, kind: "renew"}
	c := len(agents)
	clients, closeClients := l.agentClients(ctx, agents)
	defer closeClients()
	limit := int64(maxRate*dur.Seconds()) + int64(c)
	var count atomic.Int64
	url := l.d.https + "/v1/renew"
	body := []byte(`{}`)
	var countReached atomic.Bool
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, c, dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 4096)
		hc, a := clients[w], agents[w]
		first := true
		k := w
		for ctx.Err() == nil && time.Now().Before(deadline) {
			if count.Add(1) > limit {
				countReached.Store(true)
				return
			}
			verify, body := a.renewedTo, body
			if fresh {
				// The next key of the pool that is not the current one.
				k = (k + 1) % len(l.keys)
				if key := l.keys[k]; key.Public().(*ecdsa.PublicKey).Equal(a.current().Leaf.PublicKey) {
					k = (k + 1) % len(l.keys)
				}
				key := l.keys[k]
				body = slices.Concat([]byte(`{"csr":`), l.csrs[k], []byte(`}`))
				verify = func(b []byte) error { return a.renewedWith(b, key) }
			}
			if first {
				// The first answer's chain is verified too.
				first = false
				cur, next := a.current().Leaf, verify
				pub := cur.PublicKey
				if fresh {
					pub = l.keys[k].Public()
				}
				verify = func(b []byte) error {
					leaf, _, err := l.checkSigned(b, a.id, pub)
					if err == nil && leaf.SerialNumber.Cmp(cur.SerialNumber) == 0 {
						err = fmt.Errorf("renewal returned the same serial")
					}
					if err == nil {
						err = next(b)
					}
					return err
				}
			}
			lat, err := post(ctx, hc, url, body, verify)
			if err != nil {
				if ctx.Err() == nil {
					r.fail(err.Error())
				}
				continue
			}
			r.lat = append(r.lat, lat)
			// The next renewal presents the new certificate: a new
			// TLS connection.
			hc.Transport.(*http.Transport).CloseIdleConnections()
		}
	})
	ph.stopReason = "time"
	if countReached.Load() {
		ph.stopReason = "count"
	}
	return ph
}

// profile is a CPU profile being fetched from the profiling daemon.
type profile struct {
	path  string // CPU profile
	trace string // execution trace
	done  chan error
}

// startProfile fetches /debug/pprof/profile for the phase's duration in
// the background, or returns nil when not profiling.
func startProfile(ctx context.Context, pprofURL, dir, name string, dur time.Duration) *profile {
	if pprofURL == "" || dir == "" {
		return nil
	}
	secs := max(1, int(dur.Seconds())-1)
	base := filepath.Join(dir, strings.NewReplacer(" ", "-", "=", "").Replace(name))
	p := &profile{path: base + ".pprof", trace: base + ".trace", done: make(chan error, 2)}
	go func() {
		p.done <- fetch(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", pprofURL, secs), p.path)
	}()
	// A one-second execution trace from the middle of the phase shows
	// what the daemon waits on (go tool trace -pprof=sync|syscall|sched).
	go func() {
		select {
		case <-time.After(dur / 2):
		case <-ctx.Done():
			p.done <- ctx.Err()
			return
		}
		p.done <- fetch(ctx, pprofURL+"/debug/pprof/trace?seconds=1", p.trace)
	}()
	return p
}

// fetch saves url's body in path.
func fetch(ctx context.Context, url, path string) error {
	b, err := httpGet(ctx, url)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// httpGet returns the body of a GET of url, which must answer 200.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func (p *profile) wait() string {
	var failed bool
	for range 2 {
		if err := <-p.done; err != nil {
			logf("profile: %v", err)
			failed = true
		}
	}
	if failed {
		return ""
	}
	logf("CPU profile %s, execution trace %s", p.path, p.trace)
	return p.path
}
