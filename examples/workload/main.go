// Command workload is an HTTPS service with mutual TLS whose identity
// comes from the SPIFFE Workload API served by `agentca agent`. It uses
// only go-spiffe: no agentca code. The certificate rotates under it; every
// new handshake uses the current one.
//
//	# on the CA: processes of uid 1000 on node spiffe://example.org/node/n1 are .../web
//	agentca workloads create --dir D --id web --spiffe-id spiffe://example.org/web \
//	    --selector unix:uid:1000 --node spiffe://example.org/node/n1
//	# on the node, as uid 1000:
//	SPIFFE_ENDPOINT_SOCKET=unix:///run/agentca/agent.sock go run ./examples/workload \
//	    --listen 127.0.0.1:8443 --allow spiffe://example.org/web
//
// With --get URL it is the client instead: it calls URL with its own SVID
// and prints the answer.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "address to serve HTTPS on")
	allow := flag.String("allow", "", "the SPIFFE ID allowed to call (server), or to answer (client)")
	get := flag.String("get", "", "be a client: GET this https URL")
	flag.Parse()
	if err := run(*listen, *allow, *get); err != nil {
		log.Fatal(err)
	}
}

func run(listen, allow, get string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	peer, err := spiffeid.FromString(allow)
	if err != nil {
		return fmt.Errorf("--allow: %w", err)
	}
	// The X509Source watches the Workload API (SPIFFE_ENDPOINT_SOCKET)
	// and always holds the current SVID and bundle.
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	log.Printf("I am %s (certificate valid until %s)", svid.ID, svid.Certificates[0].NotAfter.Format(time.RFC3339))
	if get != "" {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(peer))}}
		resp, err := hc.Get(get)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(os.Stdout, resp.Body)
		return err
	}
	srv := &http.Server{Addr: listen, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(peer)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := spiffeid.FromURI(r.TLS.PeerCertificates[0].URIs[0])
			fmt.Fprintf(w, "hello %s, from %s\n", caller, svid.ID)
		})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Printf("serving on https://%s, allowing %s", listen, peer)
	if err := srv.ListenAndServeTLS("", ""); err != http.ErrServerClosed {
		return err
	}
	return nil
}
