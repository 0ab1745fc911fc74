package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

// maxFetch bounds OCSP responses and CRLs read from the network.
const maxFetch = 16 << 20

type revocationChecker struct {
	opts *Options
	ocsp sync.Map // issuerSKI/serial → *cachedOCSP
	crls sync.Map // URL → *cachedCRL
}

type cachedOCSP struct {
	resp  *xocsp.Response
	until time.Time
}

type cachedCRL struct {
	list  *x509.RevocationList
	until time.Time
}

func (r *revocationChecker) cacheUntil(next time.Time) time.Time {
	if r.opts.MaxCacheAge > 0 {
		if capped := r.opts.Now().Add(r.opts.MaxCacheAge); capped.Before(next) {
			return capped
		}
	}
	return next
}

// check establishes leaf's status: a valid stapled OCSP response, else a
// cached or fetched one, else the CRL. Any definite "revoked" refuses;
// nothing definite refuses unless SoftFail.
func (r *revocationChecker) check(ctx context.Context, leaf, issuer *x509.Certificate, stapled []byte) error {
	serial := hex.EncodeToString(leaf.SerialNumber.Bytes())
	now := r.opts.Now()
	if len(stapled) > 0 {
		if resp, err := xocsp.ParseResponseForCert(stapled, leaf, issuer); err == nil && fresh(resp, now) {
			return r.verdict(resp, serial, "stapled ocsp")
		}
	}
	key := hex.EncodeToString(issuer.SubjectKeyId) + "/" + serial
	if v, ok := r.ocsp.Load(key); ok && now.Before(v.(*cachedOCSP).until) {
		return r.verdict(v.(*cachedOCSP).resp, serial, "ocsp")
	}
	resp, ocspErr := r.fetchOCSP(ctx, leaf, issuer)
	if ocspErr == nil {
		r.ocsp.Store(key, &cachedOCSP{resp: resp, until: r.cacheUntil(resp.NextUpdate)})
		return r.verdict(resp, serial, "ocsp")
	}
	list, crlErr := r.crl(ctx, leaf, issuer)
	if crlErr == nil {
		for _, e := range list.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
				return &RevokedError{Serial: serial, At: e.RevocationTime, Reason: e.ReasonCode, Source: "crl"}
			}
		}
		return nil
	}
	err := fmt.Errorf("%w: %w: OCSP: %v; CRL: %v", ErrStatusUnknown, ErrStatusUnavailable, ocspErr, crlErr)
	if r.opts.SoftFail {
		r.opts.Logger.Warn("revocation status unknown; accepting (soft-fail)", "serial", serial, "err", err)
		return nil
	}
	return err
}

func fresh(resp *xocsp.Response, now time.Time) bool {
	return !now.Before(resp.ThisUpdate.Add(-time.Minute)) && (resp.NextUpdate.IsZero() || now.Before(resp.NextUpdate))
}

func (r *revocationChecker) verdict(resp *xocsp.Response, serial, source string) error {
	switch resp.Status {
	case xocsp.Good:
		return nil
	case xocsp.Revoked:
		return &RevokedError{Serial: serial, At: resp.RevokedAt, Reason: resp.RevocationReason, Source: source}
	}
	if r.opts.SoftFail {
		return nil
	}
	return fmt.Errorf("%w: the responder does not know certificate %s", ErrStatusUnknown, serial)
}

func (r *revocationChecker) fetchOCSP(ctx context.Context, leaf, issuer *x509.Certificate) (*xocsp.Response, error) {
	if len(leaf.OCSPServer) == 0 {
		return nil, errors.New("no OCSP URL in the certificate")
	}
	der, err := xocsp.CreateRequest(leaf, issuer, &xocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, leaf.OCSPServer[0], bytes.NewReader(der))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	body, err := do(r.opts.HTTPClient, req)
	if err != nil {
		return nil, err
	}
	resp, err := xocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return nil, err
	}
	if !fresh(resp, r.opts.Now()) {
		return nil, errors.New("stale OCSP response")
	}
	return resp, nil
}

func (r *revocationChecker) crl(ctx context.Context, leaf, issuer *x509.Certificate) (*x509.RevocationList, error) {
	if len(leaf.CRLDistributionPoints) == 0 {
		return nil, errors.New("no CRL distribution point in the certificate")
	}
	url := leaf.CRLDistributionPoints[0]
	now := r.opts.Now()
	if v, ok := r.crls.Load(url); ok && now.Before(v.(*cachedCRL).until) {
		return v.(*cachedCRL).list, nil
	}
	body, err := get(ctx, r.opts.HTTPClient, url)
	if err != nil {
		return nil, err
	}
	list, err := x509.ParseRevocationList(body)
	if err != nil {
		return nil, err
	}
	if err := list.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("CRL signature: %w", err)
	}
	if now.After(list.NextUpdate) {
		return nil, errors.New("stale CRL")
	}
	r.crls.Store(url, &cachedCRL{list: list, until: r.cacheUntil(list.NextUpdate)})
	return list, nil
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return do(hc, req)
}

func do(hc *http.Client, req *http.Request) ([]byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetch))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s", req.URL, resp.Status)
	}
	return body, nil
}
