package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

// staple is an OCSP response for one of the Source's certificates.
type staple struct {
	serial string
	der    []byte
	next   time.Time // nextUpdate
	this   time.Time // thisUpdate
}

// GetCertificate is a tls.Config hook for servers: the current certificate
// with its stapled OCSP response when the Source has a fresh one, so that
// clients learn its status without asking the CA.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cr := s.creds.Load()
	c := cr.TLSCertificate()
	if st := s.staple.Load(); st != nil && st.serial == cr.Serial && time.Now().Before(st.next) {
		c.OCSPStaple = st.der
	}
	return c, nil
}

// OCSPStaple returns the current stapled response (DER), nil if none.
func (s *Source) OCSPStaple() []byte {
	cr := s.creds.Load()
	if st := s.staple.Load(); st != nil && st.serial == cr.Serial {
		return st.der
	}
	return nil
}

// stapleLoop keeps an OCSP response for the current certificate: fetched
// after each new certificate and again at two thirds of its validity;
// failures are retried every few seconds. Stapling is best effort: the
// certificate is served without a staple meanwhile.
func (s *Source) stapleLoop(ctx context.Context) {
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		cr := s.creds.Load()
		if st := s.staple.Load(); st == nil || st.serial != cr.Serial || !time.Now().Before(st.refreshAt()) {
			if err := s.fetchStaple(ctx, hc, cr); err != nil {
				s.log.Debug("OCSP staple fetch failed", "serial", cr.Serial, "err", err)
			}
		}
		wait := 5 * time.Second
		if st := s.staple.Load(); st != nil && st.serial == cr.Serial {
			wait = max(time.Until(st.refreshAt()), time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stapleKick:
		case <-time.After(wait):
		}
	}
}

// refreshAt is two thirds into the response's validity.
func (st *staple) refreshAt() time.Time { return st.this.Add(st.next.Sub(st.this) * 2 / 3) }

func (s *Source) fetchStaple(ctx context.Context, hc *http.Client, cr *Credentials) error {
	if len(cr.Leaf.OCSPServer) == 0 || len(cr.Chain) == 0 {
		return errors.New("no OCSP URL or no issuer")
	}
	der, err := xocsp.CreateRequest(cr.Leaf, cr.Chain[0], &xocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cr.Leaf.OCSPServer[0], bytes.NewReader(der))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("OCSP responder answered %s", resp.Status)
	}
	parsed, err := xocsp.ParseResponseForCert(body, cr.Leaf, cr.Chain[0])
	if err != nil {
		return err
	}
	if parsed.Status != xocsp.Good {
		return fmt.Errorf("OCSP status of our own certificate is %d, not good; not stapling", parsed.Status)
	}
	s.staple.Store(&staple{serial: cr.Serial, der: body, this: parsed.ThisUpdate, next: parsed.NextUpdate})
	return nil
}
