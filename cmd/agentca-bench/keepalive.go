package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"time"
)

// The token, token-exchange and jwt-svid phases drive each agent's
// keep-alive mTLS connection directly rather than through an
// http.Transport. The request's bytes are made once by net/http's
// Request.Write and sent again for each request; each answer is read by
// net/http's ReadResponse. The daemon sees what a net/http client sends
// (same request line and headers), but the load generator, which shares
// the daemon's two cores, spends about half of what the Transport's two
// goroutines per connection and its per-request bookkeeping cost: the
// phases measure the daemon, not the client.

// keepAlive is one agent's connection.
type keepAlive struct {
	conn   *tls.Conn
	br     *bufio.Reader
	broken bool // closed after an error: dial again
}

// dialAgent opens an mTLS connection to the daemon as agent a.
func (l *load) dialAgent(ctx context.Context, a *agent) (*keepAlive, error) {
	u, err := url.Parse(l.d.https)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: &tls.Config{RootCAs: l.d.roots, MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"}, ServerName: u.Hostname(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.current(), nil }}}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	return &keepAlive{conn: c.(*tls.Conn), br: bufio.NewReaderSize(c, 16<<10)}, nil
}

// keepAlives dials one connection per agent; close closes them.
func (l *load) keepAlives(ctx context.Context, agents []*agent) (conns []*keepAlive, close func(), err error) {
	conns = make([]*keepAlive, len(agents))
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { conns[i], errs[i] = l.dialAgent(ctx, a) })
	}
	wg.Wait()
	close = func() {
		for _, k := range conns {
			if k != nil {
				_ = k.conn.Close()
			}
		}
	}
	for _, err := range errs {
		if err != nil {
			close()
			return nil, nil, err
		}
	}
	return conns, close, nil
}

// rawRequest is a POST of body to rawURL as net/http's Request.Write
// puts it on the wire.
func rawRequest(rawURL, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// do sends req and reads the answer; any status but want is an error,
// and check (when set) reads the body of a wanted answer. It returns the
// time from sending to reading the whole answer. An error of the
// connection (not of the answer), or an answer that closes it, closes it
// and sets k.broken.
func (k *keepAlive) do(req []byte, want int, check func([]byte) error) (time.Duration, error) {
	t0 := time.Now()
	_ = k.conn.SetDeadline(t0.Add(30 * time.Second))
	if _, err := k.conn.Write(req); err != nil {
		k.close()
		return 0, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		k.close()
		return 0, err
	}
	lat, err := readAnswer(resp, t0, want, check)
	if resp.Close || (err != nil && !errors.As(err, new(answerError))) {
		k.close()
		if err == nil {
			err = fmt.Errorf("%s: the daemon closed the connection", resp.Status)
		}
	}
	return lat, err
}

func (k *keepAlive) close() {
	k.broken = true
	_ = k.conn.Close()
}

// sameRequestLoad runs phase name: every agent POSTs body as contentType
// to path on its own connection until dur has passed; first(w, b) checks
// worker w's first answer, and every answer must be 200.
func (l *load) sameRequestLoad(ctx context.Context, name, kind, path, contentType string, body []byte, agents []*agent,
	first func(w int, b []byte) error, dur time.Duration, pprofURL, pprofDir string) *phase {
	ph := &phase{name: name, kind: kind}
	req, err := rawRequest(l.d.https+path, contentType, body)
	if err != nil {
		ph.errors++
		logf("%s: %v", name, err)
		return ph
	}
	reqs := make([][]byte, len(agents))
	for w := range reqs {
		reqs[w] = req
	}
	l.keepAliveLoad(ctx, ph, agents, reqs, http.StatusOK, first, dur, pprofURL, pprofDir)
	return ph
}

// keepAliveLoad has each agent send its request reqs[w] on its own
// connection until dur has passed, and measures it. Every answer must
// have status want; first(w, b) checks worker w's first answer b. A broken
// connection is dialled again.
func (l *load) keepAliveLoad(ctx context.Context, ph *phase, agents []*agent, reqs [][]byte, want int, first func(w int, b []byte) error,
	dur time.Duration, pprofURL, pprofDir string) {
	conns, closeConns, err := l.keepAlives(ctx, agents)
	if err != nil {
		ph.errors++
		logf("%s: connecting: %v", ph.name, err)
		return
	}
	defer closeConns()
	runtime.GC()
	deadline := time.Now().Add(dur)
	l.measure(ctx, ph, len(agents), dur, pprofURL, pprofDir, func(w int, r *result) {
		r.lat = make([]time.Duration, 0, 8192)
		k, check := conns[w], func(b []byte) error { return first(w, b) }
		for ctx.Err() == nil && time.Now().Before(deadline) {
			if k.broken {
				nk, err := l.dialAgent(ctx, agents[w])
				if err != nil {
					r.fail(err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				k, conns[w] = nk, nk
			}
			lat, err := k.do(reqs[w], want, check)
			check = nil
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
}
