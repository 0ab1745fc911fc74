package nodeagent

// The SPIFFE Workload API (gRPC service SpiffeWorkloadAPI) on the unix
// socket. The JWT methods are in jwt.go.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentca/agentca/agent"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// HeaderKey is the metadata every Workload API request must carry with
// the value "true" (SPIFFE Workload Endpoint specification).
const HeaderKey = "workload.spiffe.io"

// NewServer returns a gRPC server with the Workload API and Envoy SDS, attesting callers
// from the unix socket's peer credentials.
func (a *Agent) NewServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{grpc.Creds(peerCredentials{}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkHeader(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkHeader(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}, opts...)
	s := grpc.NewServer(opts...)
	workload.RegisterSpiffeWorkloadAPIServer(s, &workloadAPI{a: a})
	secretv3.RegisterSecretDiscoveryServiceServer(s, &sdsServer{a: a})
	return s
}

// checkHeader enforces the security header on the Workload API (Envoy's
// SDS requests do not carry it).
func checkHeader(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, "/SpiffeWorkloadAPI/") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(HeaderKey); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// Listen makes the unix socket at path (replacing a stale one) that every
// local user may connect to: callers are told apart by the kernel.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
		_ = os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o777); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a *Agent
}

// attest returns the caller's selectors.
func (a *Agent) attest(ctx context.Context) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no peer")
	}
	c, ok := p.AuthInfo.(Caller)
	if !ok {
		return nil, status.Error(codes.Internal, "the caller was not attested")
	}
	// The pod first: UnixSelectors checks last that the caller still
	// exists, which covers the cgroup read too.
	var pod []string
	if a.cfg.Kubelet != nil {
		var err error
		if pod, err = a.cfg.Kubelet.Selectors(ctx, c.PID); err != nil {
			a.log.Warn("kubelet lookup failed", "pid", c.PID, "err", err)
			return nil, status.Error(codes.Unavailable, "the node agent cannot reach the kubelet; retry")
		}
	}
	sel, err := a.hashes.UnixSelectors(c)
	if err == nil {
		sel = append(sel, pod...)
	}
	if err != nil {
		a.log.Warn("workload attestation failed", "pid", c.PID, "uid", c.UID, "err", err)
		return nil, status.Error(codes.PermissionDenied, "the caller could not be attested")
	}
	return sel, nil
}

// watch calls send with the caller's SVIDs now and after every change,
// until the stream ends. A caller with no identity gets PermissionDenied
// (its client retries, and gets the identity once one is defined).
func (a *Agent) watch(ctx context.Context, send func([]*agent.Credentials) error) error {
	sel, err := a.attest(ctx)
	if err != nil {
		return err
	}
	for {
		changed := a.changes()
		svids, err := a.SVIDs(ctx, sel)
		switch {
		case errors.Is(err, ErrNotLoaded), err != nil && ctx.Err() == nil:
			a.log.Warn("cannot serve a workload", "err", err)
			return status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
		case err != nil:
			return nil
		case len(svids) == 0:
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		if err := send(svids); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}

func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	var last []byte
	return w.a.watch(stream.Context(), func(svids []*agent.Credentials) error {
		bundle := concatDER(w.a.Bundle())
		fed := w.a.federatedDER()
		resp := &workload.X509SVIDResponse{FederatedBundles: fed}
		var state bytes.Buffer
		for _, cr := range svids {
			enc, err := w.a.encoded.get(cr)
			if err != nil {
				return status.Error(codes.Internal, "cannot encode the key")
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: cr.SPIFFEID, X509Svid: enc.chain, X509SvidKey: enc.key, Bundle: bundle})
			state.WriteString(cr.Serial + ",")
		}
		state.Write(bundle)
		var fs strings.Builder
		federatedState(&fs, fed)
		state.WriteString(fs.String())
		if bytes.Equal(state.Bytes(), last) {
			return nil
		}
		last = state.Bytes()
		return stream.Send(resp)
	})
}

func (w *workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	var last []byte
	return w.a.watch(stream.Context(), func([]*agent.Credentials) error {
		bundle := concatDER(w.a.Bundle())
		fed := w.a.federatedDER()
		var fs strings.Builder
		federatedState(&fs, fed)
		state := append(append([]byte(nil), bundle...), fs.String()...)
		if bytes.Equal(state, last) {
			return nil
		}
		last = state
		bundles := map[string][]byte{w.a.cfg.TrustDomain.IDString(): bundle}
		for id, b := range fed {
			bundles[id] = b
		}
		return stream.Send(&workload.X509BundlesResponse{Bundles: bundles})
	})
}
