package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// caServerPath is the path of the CA's own HTTPS server SPIFFE ID
// (spiffe://<trust domain>/agentca/server). The CA reserves /agentca/ for
// itself: no workload certificate can carry it, so a workload leaf given
// the CA's DNS name (a dns_sans template) still cannot pass for the CA.
const caServerPath = "/agentca/server"

// checkCAServer requires that leaf, the CA's HTTPS server certificate
// (already verified against the anchors and the host name), names the
// CA's own SPIFFE ID and nothing else.
func checkCAServer(leaf *x509.Certificate) error {
	if len(leaf.URIs) != 1 {
		return fmt.Errorf("agent: the CA's server certificate names %d URIs, want its SPIFFE ID only", len(leaf.URIs))
	}
	id, err := spiffeid.FromURI(leaf.URIs[0])
	if err != nil || id.Path() != caServerPath {
		return fmt.Errorf("agent: the server certificate is not the CA's (SPIFFE ID %s, want spiffe://<trust domain>%s)", leaf.URIs[0], caServerPath)
	}
	return nil
}

// VerifyCAServer is a tls.Config VerifyConnection hook for connections to
// the CA: on top of the chain and host name checks, the server certificate
// must carry the CA's own SPIFFE ID.
func VerifyCAServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("agent: the CA presented no server certificate")
	}
	return checkCAServer(cs.PeerCertificates[0])
}
