package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/crl"
	"github.com/agentca/agentca/wire"
	"github.com/urfave/cli/v2"
)

func taskCommand() *cli.Command {
	return &cli.Command{
		Name:  "task",
		Usage: "manage tasks: certificates (and the access tokens bound to them) issued for a task id",
		Subcommands: []*cli.Command{{
			Name:      "end",
			Usage:     "revoke every certificate issued for task ID: through the admin socket (--dir) or as an admin over mTLS (--ca --out)",
			ArgsUsage: "ID",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Usage: "state directory of the running daemon (admin socket)", EnvVars: []string{"AGENTCA_DIR"}},
				caFlag(), outFlag(),
				&cli.StringFlag{Name: "reason", Usage: "RFC 5280 reason", Value: "cessationOfOperation", EnvVars: []string{"AGENTCA_REASON"}},
				&cli.BoolFlag{Name: "json", Usage: "print the answer as JSON"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("give exactly one task ID")
				}
				if _, err := crl.ParseReason(c.String("reason")); err != nil {
					return usagef("--reason: unknown reason %q", c.String("reason"))
				}
				req := wire.TaskEndRequest{Task: c.Args().First(), Reason: c.String("reason")}
				if !api.ValidTask(req.Task) {
					return usagef("task ID %q: 1-128 letters, digits, '.', '_', ':', '/' or '-'", req.Task)
				}
				var resp wire.TaskEndResponse
				switch {
				case c.String("dir") != "" && c.String("ca") == "":
					if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/tasks/end", req, &resp); err != nil {
						return err
					}
				case c.String("ca") != "" && c.String("out") != "" && c.String("dir") == "":
					if err := endTaskOverTLS(c, req, &resp); err != nil {
						return err
					}
				default:
					return usagef("give --dir (admin socket), or --ca and --out (an admin certificate)")
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(resp)
				}
				fmt.Fprintf(c.App.Writer, "Ended task %s: revoked %d certificate(s)\n", resp.Task, len(resp.Revoked))
				for _, s := range resp.Revoked {
					fmt.Fprintln(c.App.Writer, s)
				}
				return nil
			},
		}},
	}
}

// endTaskOverTLS posts to the HTTPS listener's admin API with the
// certificate in --out, whose SPIFFE ID must be in the CA's admins.
func endTaskOverTLS(c *cli.Context, req wire.TaskEndRequest, out *wire.TaskEndResponse) error {
	cur, roots, err := agent.LoadFiles(c.String("out"))
	if err != nil {
		return err
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(c.Context, http.MethodPost, strings.TrimSuffix(c.String("ca"), "/")+"/admin/v1/tasks/end", bytes.NewReader(b))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: tlsClientConfig(poolOf(roots), cur.TLSCertificate())}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(hreq)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e wire.Error
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s: %s", e.Code, e.Message)
		}
		return fmt.Errorf("the CA answered %s", resp.Status)
	}
	return json.Unmarshal(body, out)
}

func tlsClientConfig(roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, VerifyConnection: agent.VerifyCAServer,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
}
