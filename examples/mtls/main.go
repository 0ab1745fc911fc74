// Command mtls shows two services that talk mutual TLS with certificates
// that live one minute, using the agent package. Both enroll with a join
// token, renew in the background, and never fail a handshake while their
// certificates rotate.
//
//	TOKEN_S=$(agentca token create --dir agentca-data --spiffe-id spiffe://example.org/svc/server)
//	TOKEN_C=$(agentca token create --dir agentca-data --spiffe-id spiffe://example.org/svc/client)
//	go run ./examples/mtls --ca https://127.0.0.1:8443 --root agentca-data/roots.pem \
//	    --server-token "$TOKEN_S" --client-token "$TOKEN_C"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Options for run.
type Options struct {
	CAURL, RootFile          string
	ServerToken, ClientToken string
	TTL, Interval, Duration  time.Duration
	Out                      io.Writer
}

func main() {
	var o Options
	flag.StringVar(&o.CAURL, "ca", "https://127.0.0.1:8443", "the CA's HTTPS URL")
	flag.StringVar(&o.RootFile, "root", "agentca-data/roots.pem", "the CA's roots")
	flag.StringVar(&o.ServerToken, "server-token", "", "join token for the server's SPIFFE ID")
	flag.StringVar(&o.ClientToken, "client-token", "", "join token for the client's SPIFFE ID")
	flag.DurationVar(&o.TTL, "ttl", time.Minute, "certificate lifetime")
	flag.DurationVar(&o.Interval, "interval", time.Second, "time between requests")
	flag.DurationVar(&o.Duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	flag.Parse()
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stats, err := run(ctx, o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d requests, %d failed, %d server and %d client certificates\n", stats.Requests, stats.Failures, stats.ServerCerts, stats.ClientCerts)
}

// Stats counts what happened.
type Stats struct {
	Requests, Failures       int
	ServerCerts, ClientCerts int
}

func run(ctx context.Context, o Options) (*Stats, error) {
	if o.ServerToken == "" || o.ClientToken == "" {
		return nil, errors.New("--server-token and --client-token are required")
	}
	b, err := os.ReadFile(o.RootFile)
	if err != nil {
		return nil, err
	}
	roots, err := agent.ParseCertificates(b)
	if err != nil {
		return nil, err
	}
	source := func(token string) (*agent.Source, error) {
		return agent.NewSource(ctx, agent.Config{
			CAURL: o.CAURL, Roots: roots, Provisioner: "join", TTL: o.TTL,
			Attest: func(context.Context) (string, error) { return token, nil },
		})
	}
	server, err := source(o.ServerToken)
	if err != nil {
		return nil, fmt.Errorf("server enrollment: %w", err)
	}
	defer server.Close()
	client, err := source(o.ClientToken)
	if err != nil {
		return nil, fmt.Errorf("client enrollment: %w", err)
	}
	defer client.Close()
	serverID, _ := spiffeid.FromString(server.Current().SPIFFEID)
	clientID, _ := spiffeid.FromString(client.Current().SPIFFEID)

	// The server accepts only the client's SPIFFE ID, the client only the
	// server's; both follow the CA's bundle.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		TLSConfig:         server.ServerTLSConfig(tlsconfig.AuthorizeID(clientID)),
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s, from serial %s", r.TLS.PeerCertificates[0].URIs[0], server.Current().Serial)
		}),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   client.ClientTLSConfig(tlsconfig.AuthorizeID(serverID)),
		DisableKeepAlives: true, // a new handshake per request shows the rotation
	}}
	stats := &Stats{}
	serverSerials, clientSerials := map[string]bool{}, map[string]bool{}
	var deadline <-chan time.Time
	if o.Duration > 0 {
		deadline = time.After(o.Duration)
	}
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		stats.Requests++
		resp, err := hc.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			stats.Failures++
			fmt.Fprintf(o.Out, "request %d failed: %v\n", stats.Requests, err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Fprintf(o.Out, "client serial %s: %s\n", client.Current().Serial, body)
		}
		serverSerials[server.Current().Serial] = true
		clientSerials[client.Current().Serial] = true
		stats.ServerCerts, stats.ClientCerts = len(serverSerials), len(clientSerials)
		select {
		case <-ctx.Done():
			return stats, nil
		case <-deadline:
			return stats, nil
		case <-tick.C:
		}
	}
}
