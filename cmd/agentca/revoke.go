package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/wire"
	"github.com/urfave/cli/v2"
	xocsp "golang.org/x/crypto/ocsp"
)

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:  "revoke",
		Usage: "revoke a certificate: by serial through the admin socket (--dir), or your own over mTLS (--ca --out)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "state directory of the running daemon (admin revoke)", EnvVars: []string{"AGENTCA_DIR"}},
			&cli.StringFlag{Name: "serial", Usage: "serial number in hex (admin revoke)", EnvVars: []string{"AGENTCA_SERIAL"}},
			caFlag(), outFlag(),
			&cli.StringFlag{Name: "reason", Usage: "RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, affiliationChanged, privilegeWithdrawn, cACompromise, aACompromise, unspecified", EnvVars: []string{"AGENTCA_REASON"}},
		},
		Action: func(c *cli.Context) error {
			if _, err := crl.ParseReason(c.String("reason")); err != nil {
				return usagef("--reason: unknown reason %q", c.String("reason"))
			}
			req := wire.RevokeRequest{Serial: c.String("serial"), Reason: c.String("reason")}
			var resp wire.RevokeResponse
			switch {
			case c.String("dir") != "" && c.String("serial") != "" && c.String("ca") == "":
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/revoke", req, &resp); err != nil {
					return err
				}
			case c.String("ca") != "" && c.String("out") != "" && c.String("dir") == "":
				cur, roots, err := agent.LoadFiles(c.String("out"))
				if err != nil {
					return err
				}
				client, err := agent.NewClient(c.String("ca"), poolOf(roots))
				if err != nil {
					return err
				}
				if err := client.Revoke(c.Context, cur.TLSCertificate(), req.Serial, req.Reason, &resp); err != nil {
					return err
				}
			default:
				return usagef("give --dir and --serial (admin), or --ca and --out (self-revoke)")
			}
			fmt.Fprintf(c.App.Writer, "Revoked %s (%s) at %s, reason %s\n", resp.Serial, resp.SPIFFEID, resp.RevokedAt.Format(time.RFC3339), resp.Reason)
			return nil
		},
	}
}

// enrolled loads the credentials an enroll wrote to out and returns them
// with a client of the CA at caURL that trusts their bundle.
func enrolled(caURL, out string) (*agent.Credentials, *agent.Client, error) {
	cur, roots, err := agent.LoadFiles(out)
	if err != nil {
		return nil, nil, err
	}
	client, err := agent.NewClient(caURL, poolOf(roots))
	if err != nil {
		return nil, nil, err
	}
	return cur, client, nil
}

func poolOf(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// exitCode ends the command with a status and no message (the command
// already printed its answer).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func ocspCommand() *cli.Command {
	return &cli.Command{
		Name:  "ocsp",
		Usage: "check a certificate's status with the CA's OCSP responder: prints good, revoked (reason, time) or unknown; exit 0 only for good",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "cert", Usage: "PEM file with the certificate (the issuer may follow it)", EnvVars: []string{"AGENTCA_CERT"}},
			&cli.StringFlag{Name: "issuer", Usage: "PEM file with the issuing CA (default: the second certificate in --cert)", EnvVars: []string{"AGENTCA_ISSUER"}},
			&cli.StringFlag{Name: "url", Usage: "OCSP responder URL (default: the certificate's AIA OCSP URL)", EnvVars: []string{"AGENTCA_OCSP_URL"}},
		},
		Action: func(c *cli.Context) error {
			if c.String("cert") == "" {
				return usagef("--cert is required")
			}
			b, err := os.ReadFile(c.String("cert"))
			if err != nil {
				return err
			}
			certs, err := agent.ParseCertificates(b)
			if err != nil {
				return err
			}
			leaf := certs[0]
			var issuer *x509.Certificate
			if f := c.String("issuer"); f != "" {
				ib, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				is, err := agent.ParseCertificates(ib)
				if err != nil {
					return err
				}
				issuer = is[0]
			} else if len(certs) > 1 {
				issuer = certs[1]
			} else {
				return usagef("--cert holds no issuer; give --issuer")
			}
			url := c.String("url")
			if url == "" {
				if len(leaf.OCSPServer) == 0 {
					return errors.New("the certificate names no OCSP responder; give --url")
				}
				url = leaf.OCSPServer[0]
			}
			der, err := xocsp.CreateRequest(leaf, issuer, &xocsp.RequestOptions{Hash: crypto.SHA256})
			if err != nil {
				return err
			}
			hreq, err := http.NewRequestWithContext(c.Context, http.MethodPost, url, bytes.NewReader(der))
			if err != nil {
				return err
			}
			hreq.Header.Set("Content-Type", "application/ocsp-request")
			hresp, err := (&http.Client{Timeout: 30 * time.Second}).Do(hreq)
			if err != nil {
				return err
			}
			defer hresp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
			if err != nil {
				return err
			}
			if hresp.StatusCode != http.StatusOK {
				return fmt.Errorf("OCSP responder answered %s", hresp.Status)
			}
			resp, err := xocsp.ParseResponseForCert(body, leaf, issuer)
			if err != nil {
				return fmt.Errorf("OCSP response: %w", err)
			}
			w := c.App.Writer
			switch resp.Status {
			case xocsp.Good:
				fmt.Fprintln(w, "good")
				return nil
			case xocsp.Revoked:
				fmt.Fprintf(w, "revoked (%s, %s)\n", crl.ReasonName(resp.RevocationReason), resp.RevokedAt.UTC().Format(time.RFC3339))
			default:
				fmt.Fprintln(w, "unknown")
			}
			return exitCode(1)
		},
	}
}
