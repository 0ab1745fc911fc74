// Command wlclient is the end-to-end tests' Workload API client: it uses
// only go-spiffe's workloadapi, as any SPIFFE workload would.
//
//	wlclient -socket unix:///path fetch DIR   one X.509 context: prints the SVID's ID (or the gRPC code), writes DIR/svid.pem and DIR/bundle.pem
//	wlclient -socket unix:///path watch N     prints one JSON line per update until N updates
//	wlclient -socket unix:///path roots N     watches until the bundle holds N roots
//	wlclient -socket unix:///path serve PEER_ID    serves mTLS on 127.0.0.1:0 (prints "listening ADDR") to PEER_ID only
//	wlclient -socket unix:///path call ADDR=PEER_ID  calls https://ADDR with a new handshake each time until -timeout; prints the counts
//	wlclient -socket unix:///path sds N       an Envoy SDS v3 stream: prints one JSON line per response, ACKs each, until N
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// update is one line of watch output.
type update struct {
	IDs      []string  `json:"ids"`
	Serials  []string  `json:"serials"`
	NotAfter time.Time `json:"not_after"`
	At       time.Time `json:"at"`
	Roots    int       `json:"roots"`
}

func main() {
	socket := flag.String("socket", "", "the Workload API socket (unix:///path)")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *socket, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "wlclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket string, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: wlclient -socket S fetch DIR | watch N")
	}
	addr := workloadapi.WithAddr(socket)
	switch args[0] {
	case "fetch":
		svid, err := workloadapi.FetchX509SVID(ctx, addr)
		if err != nil {
			fmt.Println("error", status.Code(err))
			return nil
		}
		bundles, err := workloadapi.FetchX509Bundles(ctx, addr)
		if err != nil {
			return err
		}
		b, err := bundles.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(args[1], "svid.pem"), svid.Certificates); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(args[1], "bundle.pem"), b.X509Authorities()); err != nil {
			return err
		}
		fmt.Println("svid", svid.ID)
		return nil
	case "watch":
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		w := &watcher{n: n, done: make(chan struct{})}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			<-w.done
			cancel()
		}()
		err = workloadapi.WatchX509Context(ctx, w, addr)
		if w.seen >= n {
			return nil
		}
		return err
	case "roots":
		// Wait for an update whose bundles hold at least N roots.
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		w := &watcher{n: -1, minRoots: n, done: make(chan struct{})}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			<-w.done
			cancel()
		}()
		err = workloadapi.WatchX509Context(ctx, w, addr)
		if w.found {
			return nil
		}
		return err
	case "serve":
		return serveMTLS(ctx, addr, args[1])
	case "call":
		return callMTLS(ctx, addr, args[1])
	case "sds":
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		return sds(ctx, socket, n)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

type watcher struct {
	n, seen  int
	minRoots int  // roots mode: stop at the first update with this many roots
	found    bool // roots mode: it came
	done     chan struct{}
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var u update
	for _, s := range c.SVIDs {
		u.IDs = append(u.IDs, s.ID.String())
		u.Serials = append(u.Serials, s.Certificates[0].SerialNumber.Text(16))
		u.NotAfter = s.Certificates[0].NotAfter
	}
	u.At = time.Now()
	for _, b := range c.Bundles.Bundles() {
		u.Roots += len(b.X509Authorities())
	}
	line, _ := json.Marshal(u)
	fmt.Println(string(line))
	w.seen++
	if w.seen == w.n {
		close(w.done)
	}
	if w.minRoots > 0 && u.Roots >= w.minRoots && !w.found {
		w.found = true
		close(w.done)
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintln(os.Stderr, "watch error:", status.Code(err), err)
}

func writePEM(path string, certs []*x509.Certificate) error {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return os.WriteFile(path, out, 0o644)
}

// sdsLine is one line of sds output.
type sdsLine struct {
	Version string   `json:"version"`
	Names   []string `json:"names"`
	// Serial is the "default" tls_certificate's leaf serial.
	Serial string `json:"serial"`
	// TrustedCA is the ROOTCA validation context's PEM.
	TrustedCA string `json:"trusted_ca"`
}

func sds(ctx context.Context, socket string, n int) error {
	conn, err := grpc.NewClient(socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		return err
	}
	const typeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, Node: &corev3.Node{Id: "wlclient"}}); err != nil {
		return err
	}
	for range n {
		resp, err := stream.Recv()
		if err != nil {
			fmt.Println(`{"error":"` + status.Code(err).String() + `"}`)
			return nil
		}
		var l sdsLine
		l.Version = resp.VersionInfo
		for _, a := range resp.Resources {
			var s tlsv3.Secret
			if err := a.UnmarshalTo(&s); err != nil {
				return err
			}
			l.Names = append(l.Names, s.Name)
			if c := s.GetTlsCertificate(); c != nil && s.Name == "default" {
				block, _ := pem.Decode(c.GetCertificateChain().GetInlineBytes())
				if block == nil {
					return fmt.Errorf("default: no PEM certificate")
				}
				leaf, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return err
				}
				l.Serial = leaf.SerialNumber.Text(16)
			}
			if v := s.GetValidationContext(); v != nil {
				l.TrustedCA = string(v.GetTrustedCa().GetInlineBytes())
			}
		}
		line, _ := json.Marshal(l)
		fmt.Println(string(line))
		// ACK.
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
			return err
		}
	}
	return nil
}

// serveMTLS answers "ok" over mTLS to the peer ID only, with the current
// SVID of each handshake.
func serveMTLS(ctx context.Context, addr workloadapi.ClientOption, peer string) error {
	id, err := spiffeid.FromString(peer)
	if err != nil {
		return err
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		return err
	}
	defer src.Close()
	l, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeID(id)))
	if err != nil {
		return err
	}
	fmt.Println("listening", l.Addr())
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	})}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// callResult is call's output.
type callResult struct {
	OK, Failed  int
	OwnSerials  []string
	PeerSerials []string
	Errors      []string `json:",omitempty"`
}

// callMTLS calls https://ADDR until ctx ends, a new TLS connection each
// time, and counts the outcomes and the certificates seen on both sides.
func callMTLS(ctx context.Context, addr workloadapi.ClientOption, target string) error {
	hostPort, peer, ok := strings.Cut(target, "=")
	if !ok {
		return fmt.Errorf("call ADDR=PEER_ID")
	}
	id, err := spiffeid.FromString(peer)
	if err != nil {
		return err
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addr))
	if err != nil {
		return err
	}
	defer src.Close()
	var res callResult
	seen := func(list *[]string, s string) {
		if !slices.Contains(*list, s) {
			*list = append(*list, s)
		}
	}
	for ctx.Err() == nil {
		tr := &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(id)), DisableKeepAlives: true}
		hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		resp, err := hc.Get("https://" + hostPort + "/")
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			res.Failed++
			res.Errors = append(res.Errors, err.Error())
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == "ok" {
				res.OK++
				seen(&res.PeerSerials, resp.TLS.PeerCertificates[0].SerialNumber.Text(16))
			} else {
				res.Failed++
			}
		}
		if svid, err := src.GetX509SVID(); err == nil {
			seen(&res.OwnSerials, svid.Certificates[0].SerialNumber.Text(16))
		}
		time.Sleep(100 * time.Millisecond)
	}
	line, _ := json.Marshal(res)
	fmt.Println(string(line))
	return nil
}
