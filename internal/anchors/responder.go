package anchors

import (
	"context"
	"crypto"
	"crypto/x509"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/ocsp"
)

// responderCert keeps the delegated OCSP responder certificate of one
// issuing CA, issued for the persistent OCSP key and renewed at two
// thirds of its lifetime.
type responderCert struct {
	authority *ca.Authority
	issuer    *ca.Issuer
	responder *ocsp.Responder
	key       crypto.Signer
	ttl       time.Duration
	validity  time.Duration
	log       *slog.Logger
	cur       atomic.Pointer[x509.Certificate]
}

func (r *responderCert) renew(ctx context.Context) error {
	issued, err := r.authority.IssueResponderFrom(ctx, r.issuer, r.key.Public(), r.ttl)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(issued.DER)
	if err != nil {
		return err
	}
	if err := r.responder.SetSigner(&ocsp.Signer{Issuer: issued.Issuer.Cert, Cert: cert, Key: r.key}); err != nil {
		return err
	}
	r.cur.Store(cert)
	// Responses nobody asked for during a whole validity period go.
	r.responder.Forget(time.Now().Add(-r.validity))
	r.log.Info("OCSP responder certificate issued", "serial", issued.Serial, "not_after", issued.NotAfter.Format(time.RFC3339))
	return nil
}

func (r *responderCert) notAfter() (time.Time, time.Time) {
	c := r.cur.Load()
	return c.NotBefore, c.NotAfter
}

// RenewLoop calls renew at two thirds of the current certificate's
// lifetime (validity returns notBefore, notAfter), retrying every minute
// (sooner near expiry) after a failure, until ctx is done.
func RenewLoop(ctx context.Context, what string, validity func() (time.Time, time.Time), renew func(context.Context) error, log *slog.Logger) {
	for {
		nb, na := validity()
		wait := max(time.Until(nb.Add(na.Sub(nb)*2/3)), time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		for {
			err := renew(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			retry := min(time.Minute, max(time.Until(na)/4, time.Second))
			log.Error(what+" renewal failed; retrying", "err", err, "in", retry.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}
