package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/exchange"
	"github.com/agentca/agentca/internal/config"
)

// exchangeOptions builds the token exchange (tokens.exchange): the
// subject-token validator over the configured identity providers, this
// CA's token keys and its JWT-SVID issuer. Nil when not configured. A
// JWKS file or CA file that cannot be read refuses to start.
func exchangeOptions(dir string, cfg *config.Config, tokens *api.TokenOptions, log *slog.Logger) (*api.ExchangeOptions, error) {
	x := cfg.Tokens.Exchange
	if x == nil {
		return nil, nil
	}
	own, err := tokens.TokenKeys()
	if err != nil {
		return nil, fmt.Errorf("tokens.exchange: %w", err)
	}
	vc := exchange.Config{TokenIssuer: tokens.Issuer, TokenKeys: own, JWTSVIDIssuer: cfg.JWTIssuer(), Dir: dir,
		HTTPClient: exchangeClient(nil)}
	for i, is := range x.Issuers {
		e := exchange.Issuer{Issuer: is.Issuer, Audience: is.Audience, JWKSFile: is.JWKSFile, JWKSURL: is.JWKSURL, Algorithms: is.Algorithms}
		if is.CAFile != "" {
			p := is.CAFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("tokens.exchange.issuers[%d].ca_file: %w", i, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("tokens.exchange.issuers[%d].ca_file: %s holds no PEM certificate", i, p)
			}
			e.HTTPClient = exchangeClient(pool)
		}
		vc.Issuers = append(vc.Issuers, e)
	}
	v, err := exchange.New(vc)
	if err != nil {
		return nil, fmt.Errorf("tokens.exchange: %w", err)
	}
	log.Info("token exchange is on", "issuers", len(vc.Issuers), "max_chain", x.Chain())
	return &api.ExchangeOptions{Validator: v, MaxChain: x.Chain()}, nil
}

// exchangeClient fetches identity providers' keys: TLS 1.2+, roots (nil:
// the system's), timeouts.
func exchangeClient(roots *x509.CertPool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	tr.ResponseHeaderTimeout = 10 * time.Second
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}
