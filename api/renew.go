package api

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/wire"
	"go.step.sm/crypto/keyutil"
)

// clientCertificate authenticates the TLS client of r: its leaf must be
// recorded in the store byte for byte (the TLS handshake proved the
// client holds its key), chain to a published anchor, be unexpired and
// unrevoked. Expiry is judged on the record, so an expired leaf gets 403,
// not 401.
//
// Nothing is verified before the store has recognised the leaf: a serial
// out of range (zero, negative, over 160 bits) or unknown, or a leaf that
// differs from the record, is 401 unknown_certificate at the cost of one
// read, whatever chain came with it. The read is skipped for a record the
// ClientCerts cache holds (certcache.go: an unrevoked record, dropped by
// the revocation notifier); every check below is made on every request. A leaf recorded byte for byte and
// issued by the active issuing CA needs no signature check: the CA made
// exactly these bytes, and its issuer chains to the anchors by
// construction. One of another issuing CA still answering for its
// certificates is verified with that CA's own certificates, never with
// intermediates the client sent.
func (s *Server) clientCertificate(r *http.Request) (*x509.Certificate, *store.Certificate, *Error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, nil, errorf(http.StatusUnauthorized, CodeClientCertRequired, "present your current certificate as a TLS client certificate")
	}
	leaf := r.TLS.PeerCertificates[0]
	unknown := errorf(http.StatusUnauthorized, CodeUnknownCertificate, "the client certificate was not issued by this CA")
	if n := leaf.SerialNumber; n == nil || n.Sign() <= 0 || n.BitLen() > 160 {
		return nil, nil, unknown
	}
	rec, err := s.certRecord(r.Context(), hex.EncodeToString(leaf.SerialNumber.Bytes()))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, unknown
	}
	if err != nil {
		return nil, nil, s.refusal(err)
	}
	if !bytes.Equal(rec.DER, leaf.Raw) {
		return nil, nil, unknown
	}
	// Its issuing CA must still answer for it: one retired (even by
	// force, its root still published under another anchor) does not.
	iss := s.trust.Load().issuer(rec.IssuerSKI)
	if iss == nil {
		return nil, nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "the client certificate's issuing CA has been retired; enroll again")
	}
	if active := s.ca.Issuer(); active == nil || rec.IssuerSKI != active.SKI {
		if e := s.verifyChain(leaf, iss); e != nil {
			return nil, nil, e
		}
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "the client certificate is not for client authentication")
	}
	if rec.Revoked() {
		return leaf, rec, errorf(http.StatusForbidden, CodeCertificateRevoked, "the client certificate is revoked")
	}
	if !s.now().Before(rec.NotAfter) {
		return leaf, rec, errorf(http.StatusForbidden, CodeCertificateExpired, "the client certificate expired at %s; enroll again", rec.NotAfter.Format(time.RFC3339))
	}
	return leaf, rec, nil
}

// verifyChain checks that leaf, recorded as issued by iss, chains through
// iss's own certificates (never the client's) to a published anchor for
// client authentication, at a moment it was valid (expiry has its own
// status).
func (s *Server) verifyChain(leaf *x509.Certificate, iss *ca.Issuer) *Error {
	inter := x509.NewCertPool()
	inter.AddCert(iss.Cert)
	if iss.Cross != nil {
		inter.AddCert(iss.Cross)
	}
	at := s.now()
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: s.trust.Load().Pool, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return errorf(http.StatusUnauthorized, CodeUnauthorized, "the client certificate does not chain to this CA's trust anchors")
	}
	return nil
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	provName := "unknown"
	issued, rec, e := s.doRenew(w, r, &provName)
	a := auditEntry{op: "renew", prov: provName, issued: issued, e: e}
	if rec != nil {
		a.spiffeID, a.renewedFrom = rec.SPIFFEID, rec.Serial
	}
	s.finish(w, r, start, a)
}

func (s *Server) doRenew(w http.ResponseWriter, r *http.Request, provName *string) (*ca.Issued, *store.Certificate, *Error) {
	leaf, rec, e := s.clientCertificate(r)
	if rec != nil {
		*provName = rec.Provisioner
	}
	if e != nil {
		return nil, rec, e
	}
	if rec.Parent != "" {
		return nil, rec, errorf(http.StatusForbidden, CodeForbidden, "a workload SVID is renewed by its node agent, not by itself")
	}
	var req wire.RenewRequest
	if e := decodeJSON(w, r, &req, true); e != nil {
		return nil, rec, e
	}
	ttl, e := ParseTTL(req.TTL)
	if e != nil {
		return nil, rec, e
	}
	pub := leaf.PublicKey
	if req.CSR != "" {
		csr, err := ca.ParseCSR([]byte(req.CSR))
		if err != nil {
			return nil, rec, csrError(err)
		}
		if keyutil.Equal(csr.PublicKey, leaf.PublicKey) {
			return nil, rec, errorf(http.StatusBadRequest, CodeBadKey, "the CSR reuses the current key; send a fresh key, or no CSR to keep the key")
		}
		pub = csr.PublicKey
	}
	prov := (*s.provs.Load())[rec.Provisioner]
	if prov == nil {
		return nil, rec, errorf(http.StatusForbidden, CodeForbidden, "provisioner %q that vouched for this certificate is no longer configured; enroll again", rec.Provisioner)
	}
	creq := &ca.Request{
		PublicKey: pub, SPIFFEID: rec.SPIFFEID, DNSNames: rec.DNSNames, Provisioner: rec.Provisioner,
		TTL: ttl, DefaultTTL: prov.DefaultTTL, MaxTTL: prov.MaxTTL, RenewedFrom: rec.Serial, Task: rec.Task,
		Claims: rec.Claims,
	}
	// The policy sees the claims the lineage was attested with.
	issued, e, err := s.issue(r, "renew", creq)
	if e != nil {
		return nil, rec, e
	}
	if err != nil {
		if e := s.renewalReused(r, rec, err); e != nil {
			return nil, rec, e
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, rec, errorf(http.StatusUnauthorized, CodeUnknownCertificate, "the client certificate is no longer recorded; enroll again")
		}
		return nil, rec, s.refusal(err)
	}
	return issued, rec, nil
}
