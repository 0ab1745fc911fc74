package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// revokeTarget is issue 4's bound on revocation-to-OCSP and -CRL.
const revokeTarget = time.Second

// revokeRateTarget is issue 8's target for revocations through the admin
// API.
const revokeRateTarget = 1000

// pollEvery is how often the latency phase asks OCSP and the CRL.
const pollEvery = 5 * time.Millisecond

// adminClient talks HTTP over the daemon's admin socket D/admin.sock.
func (d *daemon) adminClient(conns int) (*http.Client, *http.Transport) {
	sock := filepath.Join(d.dir, "admin.sock")
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr
}

// adminRevoke is POST /admin/v1/revoke {"serial","reason":"keyCompromise"}.
func adminRevoke(ctx context.Context, hc *http.Client, serial string) error {
	body := `{"serial":"` + serial + `","reason":"keyCompromise"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agentca-admin/admin/v1/revoke", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke %s: %s: %s", serial, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	var rr struct {
		Serial string `json:"serial"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(b, &rr); err != nil {
		return fmt.Errorf("revoke %s: %w", serial, err)
	}
	if rr.Reason != "keyCompromise" {
		return fmt.Errorf("revoke %s: answered reason %q", serial, rr.Reason)
	}
	return nil
}

// revokeStats is the revoke-latency phase's result.
type revokeStats struct {
	n         int             // revocations attempted
	call      []time.Duration // sorted: the admin API call
	toOCSP    []time.Duration // sorted: from sending the revocation to the first Revoked OCSP answer
	toCRL     []time.Duration // sorted: from sending the revocation to the first CRL listing the serial
	underLoad int             // revocations finished while the sign load ran
	crlBuilds int             // distinct CRLs seen
	errors    int
	first     []string
	load      *phase // the concurrent sign load
	elapsed   time.Duration
}

func (s *revokeStats) fail(msg string) {
	s.errors++
	if len(s.first) < 5 {
		s.first = append(s.first, msg)
	}
}

func quantile(lat []time.Duration, q float64) time.Duration {
	p := phase{lat: lat}
	return p.pct(q)
}

// revokeLatency revokes n of certs one at a time through the admin socket
// while a join-token sign load runs at concurrency c, and for each polls
// POST /ocsp and the leaf's CRL distribution point every pollEvery until
// they show the revocation. The sign load ends when the revocations are
// done, after maxDur, or when its tokens run out.
func (l *load) revokeLatency(ctx context.Context, certs []*ocspCert, n, c int, maxDur time.Duration) *revokeStats {
	st := &revokeStats{n: min(n, len(certs))}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	tokens := l.takeTokens(len(l.tokens) - l.next)
	st.load = &phase{name: fmt.Sprintf("sign c=%d during revoke-latency", c), kind: "sign"}
	loadFinished := make(chan struct{})
	var used int
	go func() {
		defer close(loadFinished)
		used = l.signLoad(loadCtx, st.load, c, maxDur, "join", tokens, "", "")
	}()

	admin, atr := l.d.adminClient(1)
	defer atr.CloseIdleConnections()
	ptr := plainTransport(4)
	defer ptr.CloseIdleConnections()
	poll := &http.Client{Transport: ptr, Timeout: 10 * time.Second}

	// Let the load reach its stride (connections open, queues full).
	select {
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
	}
	start := time.Now()
	var crlMu sync.Mutex
	seenCRL := map[string]bool{}
	for i := 0; i < st.n && ctx.Err() == nil; i++ {
		oc := certs[i]
		serial := fmt.Sprintf("%x", oc.leaf.SerialNumber)
		if len(oc.leaf.CRLDistributionPoints) == 0 {
			st.fail("leaf has no CRL distribution point")
			break
		}
		crlURL := oc.leaf.CRLDistributionPoints[0]
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		var wg sync.WaitGroup
		var toOCSP, toCRL time.Duration
		var ocspErr, crlErr error
		wg.Go(func() { toOCSP, ocspErr = pollOCSP(pctx, poll, l.d.http, oc, t0) })
		wg.Go(func() {
			var der []byte
			toCRL, der, crlErr = pollCRL(pctx, poll, crlURL, oc, t0)
			if der != nil {
				crlMu.Lock()
				seenCRL[string(der)] = true
				crlMu.Unlock()
			}
		})
		err := adminRevoke(ctx, admin, serial)
		call := time.Since(t0)
		if err != nil {
			cancel()
			wg.Wait()
			st.fail(err.Error())
			continue
		}
		wg.Wait()
		cancel()
		select {
		case <-loadFinished:
		default:
			st.underLoad++
		}
		st.call = append(st.call, call)
		if ocspErr != nil {
			st.fail(fmt.Sprintf("serial %s: OCSP: %v", serial, ocspErr))
		} else {
			st.toOCSP = append(st.toOCSP, toOCSP)
		}
		if crlErr != nil {
			st.fail(fmt.Sprintf("serial %s: CRL: %v", serial, crlErr))
		} else {
			st.toCRL = append(st.toCRL, toCRL)
		}
	}
	st.elapsed = time.Since(start)
	stopLoad()
	<-loadFinished
	l.next -= len(tokens) - used
	if st.load.stopReason == "time" && ctx.Err() == nil && st.load.elapsed < maxDur-100*time.Millisecond {
		st.load.stopReason = "revocations done"
	}
	st.crlBuilds = len(seenCRL)
	slices.Sort(st.call)
	slices.Sort(st.toOCSP)
	slices.Sort(st.toCRL)
	return st
}

// pollOCSP asks POST /ocsp for oc until the answer is Revoked (reason
// keyCompromise) and returns the time since t0.
func pollOCSP(ctx context.Context, hc *http.Client, base string, oc *ocspCert, t0 time.Time) (time.Duration, error) {
	for {
		b, err := ocspAsk(ctx, hc, base, oc, http.MethodPost)
		if err != nil {
			return 0, err
		}
		st, r, err := oc.status(b)
		if err != nil {
			return 0, err
		}
		switch st {
		case ocsp.Good:
		case ocsp.Revoked:
			if r.RevocationReason != ocsp.KeyCompromise {
				return 0, fmt.Errorf("revoked with reason %d, want keyCompromise (%d)", r.RevocationReason, ocsp.KeyCompromise)
			}
			return time.Since(t0), nil
		default:
			return 0, fmt.Errorf("OCSP says %s", ocspStatusName(st))
		}
		select {
		case <-time.After(pollEvery):
		case <-ctx.Done():
			return 0, fmt.Errorf("still not revoked after %s", time.Since(t0).Round(time.Millisecond))
		}
	}
}

// pollCRL fetches url (with If-None-Match) until the CRL, signed by oc's
// issuer, lists oc's serial, and returns the time since t0 and that CRL.
func pollCRL(ctx context.Context, hc *http.Client, url string, oc *ocspCert, t0 time.Time) (time.Duration, []byte, error) {
	var etag string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, nil, err
		}
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return 0, nil, fmt.Errorf("serial not listed after %s", time.Since(t0).Round(time.Millisecond))
			}
			return 0, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return 0, nil, err
		}
		switch resp.StatusCode {
		case http.StatusNotModified:
		case http.StatusOK:
			etag = resp.Header.Get("ETag")
			rl, err := x509.ParseRevocationList(b)
			if err != nil {
				return 0, nil, err
			}
			if err := rl.CheckSignatureFrom(oc.issuer); err != nil {
				return 0, nil, fmt.Errorf("CRL signature: %w", err)
			}
			for _, e := range rl.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(oc.leaf.SerialNumber) == 0 {
					return time.Since(t0), b, nil
				}
			}
		default:
			return 0, nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		select {
		case <-time.After(pollEvery):
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("serial not listed after %s", time.Since(t0).Round(time.Millisecond))
		}
	}
}

// unrevokedSerials lists up to max serials of unrevoked certificates
// through GET /admin/v1/certs, 10,000 a page.
func (d *daemon) unrevokedSerials(ctx context.Context, limit int) ([]string, error) {
	hc, tr := d.adminClient(1)
	defer tr.CloseIdleConnections()
	var out []string
	after := ""
	for len(out) < limit {
		u := "http://agentca-admin/admin/v1/certs?limit=10000"
		if after != "" {
			u += "&after=" + url.QueryEscape(after)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		var page struct {
			Certificates []struct {
				Serial  string    `json:"serial"`
				Revoked bool      `json:"revoked"`
				After   time.Time `json:"not_after"`
			} `json:"certificates"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET /admin/v1/certs: %s", resp.Status)
		}
		if err != nil {
			return nil, fmt.Errorf("GET /admin/v1/certs: %w", err)
		}
		if len(page.Certificates) == 0 {
			break
		}
		for _, c := range page.Certificates {
			if !c.Revoked && time.Until(c.After) > time.Minute && len(out) < limit {
				out = append(out, c.Serial)
			}
		}
		after = page.Certificates[len(page.Certificates)-1].Serial
	}
	if len(out) == 0 {
		return nil, errors.New("no unrevoked certificate to revoke")
	}
	return out, nil
}

// revokeRatePhase revokes serials through POST /admin/v1/revoke at
// concurrency c for at most dur, each serial once.
func (l *load) revokeRatePhase(ctx context.Context, serials []string, c int, dur time.Duration, pprofURL, pprofDir string) *phase {
	ph := &phase{name: fmt.Sprintf("revoke c=%d", c), kind: "revoke"}
	hc, tr := l.d.adminClient(c)
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://agentca-admin/admin/v1/certs?limit=1", nil)
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	var next atomic.Int64
	var out atomic.Bool
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, c, dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 4096)
		for ctx.Err() == nil && time.Now().Before(deadline) {
			i := int(next.Add(1) - 1)
			if i >= len(serials) {
				out.Store(true)
				return
			}
			t0 := time.Now()
			if err := adminRevoke(ctx, hc, serials[i]); err != nil {
				if ctx.Err() == nil {
					r.fail(err.Error())
				}
				continue
			}
			r.lat = append(r.lat, time.Since(t0))
		}
	})
	ph.stopReason = "time"
	if out.Load() {
		ph.stopReason = "serials"
	}
	return ph
}
