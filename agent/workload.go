package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"sync"

	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
)

// NodeClient calls the CA's node agent endpoints over mTLS, presenting the
// node's current certificate. Its methods are safe for concurrent use.
type NodeClient struct {
	base  string
	roots func() *x509.CertPool
	cert  func(*tls.CertificateRequestInfo) (*tls.Certificate, error)

	mu   sync.Mutex
	pool *x509.CertPool
	hc   *http.Client

	svidConns svidConns // workload_jwt.go
}

// NewNodeClient returns a client for the CA at caURL that verifies the CA
// with roots() (read at each call, so a bundle update takes effect) and
// presents cert's certificate.
func NewNodeClient(caURL string, roots func() *x509.CertPool, cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) (*NodeClient, error) {
	c, err := NewClient(caURL, roots())
	if err != nil {
		return nil, err
	}
	return &NodeClient{base: c.base.String(), roots: roots, cert: cert}, nil
}

// client returns the HTTP client for the current roots.
func (n *NodeClient) client() (*Client, *http.Client) {
	pool := n.roots()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hc == nil || pool != n.pool {
		if n.hc != nil {
			n.hc.CloseIdleConnections()
		}
		n.pool, n.hc = pool, newHTTPClient(pool, n.cert)
	}
	c, _ := NewClient(n.base, pool)
	return c, n.hc
}

// WorkloadSign asks the CA for an X.509-SVID naming spiffeID for key, on
// behalf of a workload with selectors. The CA refuses (*APIError, 403
// workload_not_allowed) unless a definition allows this node to hand it
// out to those selectors.
func (n *NodeClient) WorkloadSign(ctx context.Context, spiffeID string, selectors []string, key crypto.Signer) (*Credentials, error) {
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	c, hc := n.client()
	return c.post(ctx, hc, "/v1/workload/sign", &wire.WorkloadSignRequest{SPIFFEID: spiffeID, Selectors: selectors, CSR: csr}, key)
}

// WorkloadDefinitions returns the workload definitions this node may hand
// out.
func (n *NodeClient) WorkloadDefinitions(ctx context.Context) (*workloads.Set, error) {
	c, hc := n.client()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.String()+"/v1/workload/definitions", nil)
	if err != nil {
		return nil, err
	}
	var set workloads.Set
	if err := c.do(hc, req, &set); err != nil {
		return nil, err
	}
	return &set, nil
}
