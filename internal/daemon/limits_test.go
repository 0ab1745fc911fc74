package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCapClientKey: a client certificate with an RSA key over 4096 bits
// is refused before the handshake signature made with it is checked.
func TestCapClientKey(t *testing.T) {
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(pub any) []byte {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "c"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{Subject: pkix.Name{CommonName: "i"}}, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	n := new(big.Int).Lsh(big.NewInt(1), 8191)
	n.SetBit(n, 0, 1)
	if err := capClientKey([][]byte{cert(&rsa.PublicKey{N: n, E: 65537})}, nil); err == nil {
		t.Fatal("an RSA-8192 client key was let in")
	}
	if err := capClientKey([][]byte{cert(signer.Public())}, nil); err != nil {
		t.Fatalf("a P-256 client key: %v", err)
	}
	if err := capClientKey(nil, nil); err != nil {
		t.Fatalf("no client certificate: %v", err)
	}
}

// TestBoundedListener: idle keep-alive connections beyond the bound make
// room for new clients, the count never exceeds the bound, and every
// closed connection is counted out.
func TestBoundedListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const bound = 5
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil))
	reg := prometheus.NewRegistry()
	bl := newBoundedListener(ln, "https", bound, log, newListenerMetrics(reg))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState: bl.connState, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(bl) }()
	defer srv.Close()
	get := func(tr *http.Transport) error {
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var trs []*http.Transport
	for range 4 * bound {
		tr := &http.Transport{}
		trs = append(trs, tr)
		if err := get(tr); err != nil {
			t.Fatal(err)
		}
		bl.mu.Lock()
		open := bl.open
		bl.mu.Unlock()
		if open > bound {
			t.Fatalf("%d open connections, bound %d", open, bound)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reached := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "agentca_listener_limit_reached_total" {
			reached = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if reached < 3*bound-1 {
		t.Fatalf("limit reached %v times, want ≥ %d", reached, 3*bound-1)
	}
	for _, tr := range trs {
		tr.CloseIdleConnections()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		bl.mu.Lock()
		open := bl.open
		bl.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted after every client closed", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "listener=https") {
		t.Fatalf("no WARN line:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
