package nodeagent

// Envoy SDS v3 (envoy.service.secret.v3.SecretDiscoveryService) on the
// Workload API socket: the caller's SVIDs as tls_certificate secrets named
// by their SPIFFE IDs (the first also as "default"), and the trust bundle
// as the validation_context "ROOTCA". State of the world over
// StreamSecrets: a response is sent when the requested names change or a
// secret rotates; an ACK (the last nonce, no error) or a NACK (error_detail
// set: logged) sends nothing; a request carrying an older nonce is stale
// and ignored. Envoy sends no workload.spiffe.io header; callers are
// attested from the kernel as on the Workload API.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"slices"
	"strconv"

	"github.com/agentca/agentca/agent"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// SecretTypeURL is the type of SDS resources.
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// The secret names besides the SPIFFE IDs.
const (
	DefaultSecret = "default"
	RootCASecret  = "ROOTCA"
)

type sdsServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	a *Agent
}

// secrets returns the secrets named (all when names is empty), and a key
// that changes when any of them does.
func (a *Agent) secrets(svids []*agent.Credentials, names []string) ([]*anypb.Any, string, error) {
	want := func(n string) bool { return len(names) == 0 || slices.Contains(names, n) }
	var out []*anypb.Any
	key := ""
	add := func(s *tlsv3.Secret, state string) error {
		m, err := anypb.New(s)
		if err != nil {
			return err
		}
		out = append(out, m)
		key += s.Name + "=" + state + ";"
		return nil
	}
	for i, cr := range svids {
		der, err := x509.MarshalPKCS8PrivateKey(cr.Key)
		if err != nil {
			return nil, "", err
		}
		chain := pemCerts(append([]*x509.Certificate{cr.Leaf}, cr.Chain...))
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		names := []string{cr.SPIFFEID}
		if i == 0 {
			names = append(names, DefaultSecret)
		}
		for _, n := range names {
			if !want(n) {
				continue
			}
			s := &tlsv3.Secret{Name: n, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(chain), PrivateKey: inline(keyPEM)}}}
			if err := add(s, cr.Serial); err != nil {
				return nil, "", err
			}
		}
	}
	if want(RootCASecret) {
		bundle := pemCerts(a.Bundle())
		s := &tlsv3.Secret{Name: RootCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(bundle)}}}
		if err := add(s, hex.EncodeToString(sha256Sum(bundle))); err != nil {
			return nil, "", err
		}
	}
	if want(AllSecret) {
		s, state, err := a.allSecret() // federation.go; nil without federated bundles
		if err != nil {
			return nil, "", err
		}
		if s != nil {
			if err := add(s, state); err != nil {
				return nil, "", err
			}
		}
	}
	return out, key, nil
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// StreamSecrets serves one Envoy's SDS stream.
func (s *sdsServer) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := stream.Context()
	sel, err := s.a.attest(ctx)
	if err != nil {
		return err
	}
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		names      []string
		subscribed bool
		nonce      string
		sentKey    string
		version    int
	)
	for {
		changed := s.a.changes()
		force := false
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			if r.TypeUrl != "" && r.TypeUrl != SecretTypeURL {
				return status.Errorf(codes.InvalidArgument, "this SDS serves %s only", SecretTypeURL)
			}
			if r.ResponseNonce != "" && r.ResponseNonce != nonce {
				continue // stale: an answer to an older response
			}
			if r.ErrorDetail != nil {
				s.a.log.Warn("SDS: Envoy rejected the secrets (NACK)", "version", r.VersionInfo, "error", r.ErrorDetail.GetMessage())
			}
			if subscribed && slices.Equal(r.ResourceNames, names) {
				continue // an ACK or a NACK of what was sent
			}
			names, subscribed, force = slices.Clone(r.ResourceNames), true, true
		case <-changed:
			if !subscribed {
				continue
			}
		}
		svids, err := s.a.SVIDs(ctx, sel)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
		case len(svids) == 0:
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		res, key, err := s.a.secrets(svids, names)
		if err != nil {
			return status.Error(codes.Internal, "cannot encode the secrets")
		}
		if !force && key == sentKey {
			continue
		}
		version++
		nonce, sentKey = newNonce(), key
		if err := stream.Send(&discoveryv3.DiscoveryResponse{VersionInfo: strconv.Itoa(version), Resources: res,
			TypeUrl: SecretTypeURL, Nonce: nonce}); err != nil {
			return err
		}
	}
}

// FetchSecrets answers one SDS request.
func (s *sdsServer) FetchSecrets(ctx context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	sel, err := s.a.attest(ctx)
	if err != nil {
		return nil, err
	}
	svids, err := s.a.SVIDs(ctx, sel)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "the node agent cannot reach the CA; retry")
	}
	if len(svids) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	res, _, err := s.a.secrets(svids, r.ResourceNames)
	if err != nil {
		return nil, status.Error(codes.Internal, "cannot encode the secrets")
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: "1", Resources: res, TypeUrl: SecretTypeURL, Nonce: newNonce()}, nil
}
