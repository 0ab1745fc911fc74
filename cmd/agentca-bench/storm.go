package main

// storm.go is the renewal storm (issue 21): many agents' renewals arriving
// at once, as after a CA or node restart. Each agent renews once, with a
// fresh key, on a new TLS connection that presents its certificate; a
// failed renewal is tried once more.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"
)

// stormPhase enrolls opts.stormAgents agents, then has stormConc workers
// renew every one of them once, as fast as the daemon answers.
func (r *benchRun) stormPhase(ctx context.Context) error {
	opts, lg, rep := r.opts, r.lg, r.rep
	n := opts.stormAgents
	if n <= 0 || !opts.runs("storm") || ctx.Err() != nil {
		return nil
	}
	logf("storm: enrolling %d agents", n)
	if err := lg.ensureTokens(ctx, n); err != nil {
		return err
	}
	agents, err := lg.enroll(ctx, n)
	if err != nil {
		return fmt.Errorf("storm: enroll: %w", err)
	}
	rep.enrolled += len(agents)
	c := min(opts.stormConc, n)
	ph := &phase{name: fmt.Sprintf("storm c=%d, %d agents, new connections", c, n), kind: "renew"}
	var next, retried, failed atomic.Int64
	url := r.d.https + "/v1/renew"
	runtime.GC()
	measureCPU(ph, c, r.d.cpuSeconds, func(w int, res *result) {
		var cur atomic.Pointer[tls.Certificate]
		tr := lg.newTransport(1, nil)
		tr.DisableKeepAlives = true
		tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cur.Load(), nil }
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		var body bytes.Buffer
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= len(agents) {
				return
			}
			cur.Store(agents[i].current())
			body.Reset()
			body.WriteString(`{"csr":`)
			body.Write(lg.csrs[i%len(lg.csrs)])
			body.WriteString(`}`)
			t0 := time.Now()
			_, err := post(ctx, hc, url, body.Bytes(), nil)
			if err != nil && ctx.Err() == nil {
				retried.Add(1)
				_, err = post(ctx, hc, url, body.Bytes(), nil)
			}
			if err != nil {
				failed.Add(1)
				if ctx.Err() == nil {
					res.fail(err.Error())
				}
				continue
			}
			res.lat = append(res.lat, time.Since(t0))
		}
	})
	ph.stopReason = fmt.Sprintf("all %d renewed once: %d retried, %d failed", n, retried.Load(), failed.Load())
	logf("%s: %d renewed in %.2fs = %.0f/s, p50 %s p99 %s, %d retried, %d failed", ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(),
		fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), retried.Load(), failed.Load())
	rep.phases = append(rep.phases, ph)
	return nil
}
