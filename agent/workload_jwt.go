package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// WorkloadJWTSVID asks the CA for a JWT-SVID for the workload whose
// X.509-SVID is svid (POST /v1/jwt-svid, presenting svid as the TLS
// client certificate, so the CA's certificate check and runtime policy
// apply to the workload's own ID), for audience, with the CA's default
// lifetime. Connections are kept alive per SVID: a renewed SVID gets a
// new one. Errors from the CA are *APIError.
func (n *NodeClient) WorkloadJWTSVID(ctx context.Context, svid *tls.Certificate, audience []string) (*JWTSVID, error) {
	if len(audience) == 0 {
		return nil, errors.New("agent: a JWT-SVID needs at least one audience")
	}
	if svid == nil || svid.Leaf == nil {
		return nil, errors.New("agent: no workload SVID")
	}
	pool := n.roots()
	c, err := NewClient(n.base, pool)
	if err != nil {
		return nil, err
	}
	return c.jwtSVID(ctx, n.svidConns.client(pool, svid), audience, 0)
}

// JWTBundle fetches the JWT-SVID keys of trust domain td from the CA's
// SPIFFE bundle (/v1/bundle), on the node's keep-alive connection,
// verifying the CA with the current roots.
func (n *NodeClient) JWTBundle(ctx context.Context, td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	c, hc := n.client()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v1/bundle", nil)
	if err != nil {
		return nil, err
	}
	st, body, err := exchange(hc, req)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("agent: /v1/bundle answered %d", st)
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		return nil, fmt.Errorf("agent: /v1/bundle: %w", err)
	}
	return jwtbundle.FromJWTAuthorities(td, b.JWTAuthorities()), nil
}

// maxSVIDConns bounds the HTTP clients kept for workload SVIDs; past it
// they are all closed and made again as needed.
const maxSVIDConns = 1024

// svidConns keeps one HTTP client (with its keep-alive connections) per
// workload SPIFFE ID, for its current SVID and roots: a renewed SVID or a
// new set of roots replaces it.
type svidConns struct {
	mu sync.Mutex
	m  map[string]*svidConn // by the SVID's URI SAN
}

type svidConn struct {
	pool *x509.CertPool
	leaf []byte // the SVID's DER
	hc   *http.Client
}

func (s *svidConns) client(pool *x509.CertPool, svid *tls.Certificate) *http.Client {
	id := ""
	if len(svid.Leaf.URIs) == 1 {
		id = svid.Leaf.URIs[0].String()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.m[id]; c != nil {
		if c.pool == pool && bytes.Equal(c.leaf, svid.Leaf.Raw) {
			return c.hc
		}
		c.hc.CloseIdleConnections()
		delete(s.m, id)
	}
	if s.m == nil || len(s.m) >= maxSVIDConns {
		for _, c := range s.m {
			c.hc.CloseIdleConnections()
		}
		s.m = map[string]*svidConn{}
	}
	hc := newHTTPClient(pool, func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return svid, nil })
	s.m[id] = &svidConn{pool: pool, leaf: svid.Leaf.Raw, hc: hc}
	return hc
}
