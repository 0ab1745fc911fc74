package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ocspTarget is issue 4's target for cached OCSP answers on 2 cores,
// client on the same machine.
const ocspTarget = 40_000

// maxOCSPRate bounds an OCSP phase by count as well as by time.
const maxOCSPRate = 200_000

// ocspCert is one enrolled certificate and its OCSP request.
type ocspCert struct {
	leaf, issuer *x509.Certificate
	// req is the DER request from ocsp.CreateRequest with nil options:
	// a SHA-1 CertID, the common default (openssl, Go, browsers).
	req []byte
	// getURL is http://…/ocsp/<url-escaped standard base64 of req>.
	getURL string
	// good is the last response body that ocsp.ParseResponseForCert
	// accepted as Good for this certificate, signature checked against
	// the issuer. An identical body is the same answer: it is compared
	// byte for byte instead of being parsed and verified again, which
	// would cost the client two ECDSA verifications per response.
	good atomic.Pointer[[]byte]
}

// ocspCerts builds the OCSP request of each enrolled agent's certificate.
func (l *load) ocspCerts(ctx context.Context, agents []*agent) ([]*ocspCert, error) {
	out := make([]*ocspCert, len(agents))
	for i, a := range agents {
		req, err := ocsp.CreateRequest(a.cert.Leaf, a.issuer, nil)
		if err != nil {
			return nil, fmt.Errorf("ocsp.CreateRequest: %w", err)
		}
		out[i] = &ocspCert{leaf: a.cert.Leaf, issuer: a.issuer, req: req,
			getURL: l.d.http + "/ocsp/" + url.PathEscape(base64.StdEncoding.EncodeToString(req))}
	}
	return out, ctx.Err()
}

// plainTransport is a keep-alive HTTP/1.1 transport for the plain HTTP
// listener, with up to conns connections.
func plainTransport(conns int) *http.Transport {
	return &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
}

// ocspAsk sends oc's request by POST or GET and returns the body of a 200
// answer.
func ocspAsk(ctx context.Context, hc *http.Client, base string, oc *ocspCert, method string) ([]byte, error) {
	var req *http.Request
	var err error
	if method == http.MethodPost {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/ocsp", bytes.NewReader(oc.req))
		if err == nil {
			req.Header.Set("Content-Type", "application/ocsp-request")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, oc.getURL, nil)
	}
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s", method, req.URL.Path[:min(len(req.URL.Path), 40)], resp.Status)
	}
	return b, nil
}

// status parses an OCSP response for oc (signature checked against the
// issuer, serial checked), unless it is byte for byte the last response
// found Good.
func (oc *ocspCert) status(b []byte) (int, *ocsp.Response, error) {
	if g := oc.good.Load(); g != nil && bytes.Equal(*g, b) {
		return ocsp.Good, nil, nil
	}
	r, err := ocsp.ParseResponseForCert(b, oc.leaf, oc.issuer)
	if err != nil {
		return 0, nil, err
	}
	if r.Status == ocsp.Good {
		c := bytes.Clone(b)
		oc.good.Store(&c)
	}
	return r.Status, r, nil
}

func ocspStatusName(s int) string {
	switch s {
	case ocsp.Good:
		return "good"
	case ocsp.Revoked:
		return "revoked"
	case ocsp.Unknown:
		return "unknown"
	}
	return fmt.Sprintf("status %d", s)
}

// ocspWarm asks once for every certificate, so that the responder has
// signed and cached each answer before the measured window, and checks
// each answer in full.
func (l *load) ocspWarm(ctx context.Context, certs []*ocspCert) error {
	tr := plainTransport(16)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	errs := make([]error, len(certs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, oc := range certs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			b, err := ocspAsk(ctx, hc, l.d.http, oc, http.MethodPost)
			if err == nil {
				var st int
				if st, _, err = oc.status(b); err == nil && st != ocsp.Good {
					err = fmt.Errorf("serial %x: %s, want good", oc.leaf.SerialNumber, ocspStatusName(st))
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("OCSP warm-up: %w", err)
		}
	}
	return nil
}

// ocspPhase asks for the certificates' status round-robin, by POST /ocsp
// or GET /ocsp/<base64>, at concurrency c over keep-alive connections
// (opened before the clock starts) for at most dur and at most
// maxOCSPRate*dur requests. Every answer must be HTTP 200 and a Good
// response for the certificate asked about.
func (l *load) ocspPhase(ctx context.Context, name, method string, certs []*ocspCert, c int, dur time.Duration, pprofURL, pprofDir string) *phase {
	ph := &phase{name: name, kind: "ocsp"}
	tr := plainTransport(c)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	warmConns(ctx, hc, l.d.http, c)
	limit := int64(maxOCSPRate * dur.Seconds())
	var count atomic.Int64
	var countReached atomic.Bool
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, c, dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 1<<16)
		for i := w; ctx.Err() == nil && time.Now().Before(deadline); i++ {
			if count.Add(1) > limit {
				countReached.Store(true)
				return
			}
			oc := certs[i%len(certs)]
			t0 := time.Now()
			b, err := ocspAsk(ctx, hc, l.d.http, oc, method)
			lat := time.Since(t0)
			if err == nil {
				var st int
				if st, _, err = oc.status(b); err == nil && st != ocsp.Good {
					err = fmt.Errorf("serial %x: %s, want good", oc.leaf.SerialNumber, ocspStatusName(st))
				}
			}
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
	if countReached.Load() {
		ph.stopReason = "count"
	}
	return ph
}
