// Command wlclient is the end-to-end tests' Workload API client: it uses
// only go-spiffe's workloadapi, as any SPIFFE workload would.
//
//	wlclient -socket unix:///path fetch DIR   one X.509 context: prints the SVID's ID (or the gRPC code), writes DIR/svid.pem and DIR/bundle.pem
//	wlclient -socket unix:///path watch N     prints one JSON line per update until N updates
//	wlclient -socket unix:///path roots N     watches until the bundle holds N roots
//	wlclient -socket unix:///path sds N       an Envoy SDS v3 stream: prints one JSON line per response, ACKs each, until N
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
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
