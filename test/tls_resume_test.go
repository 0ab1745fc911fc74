package test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
)

// TestHTTPSNoSessionResumption: the HTTPS listener issues no TLS session
// tickets, so a client with a session cache makes a full handshake on
// every connection, presenting its current certificate: a resumed
// session would carry the certificate of the handshake that made the
// ticket (an agent that renewed would be seen as its old certificate),
// and each ticket would cost the CA its encryption for nothing.
func TestHTTPSNoSessionResumption(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	conf := &tls.Config{RootCAs: c.pool(), MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i := range 2 {
		tc, err := tls.Dial("tcp", c.HTTPS, conf)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && tc.ConnectionState().DidResume {
			t.Errorf("connection %d resumed a TLS session", i)
		}
		// A request and its answer: the client reads any ticket the
		// server sent after the handshake.
		if _, err := io.WriteString(tc, "GET /health HTTP/1.1\r\nHost: ca\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tc.Close()
	}
}
