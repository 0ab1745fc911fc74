package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/wire"
	"github.com/urfave/cli/v2"
)

// adminClient talks to the running daemon over D/admin.sock.
type adminClient struct {
	sock string
	http *http.Client
}

func newAdminClient(dir string) *adminClient {
	sock := filepath.Join(dir, daemon.AdminSocket)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &adminClient{sock: sock, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

func (a *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agentca"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return a.reachError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e wire.Error
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s: %s", e.Code, e.Message)
		}
		return fmt.Errorf("daemon answered %s", resp.Status)
	}
	return json.Unmarshal(b, out)
}

// reachError explains a failure to reach the daemon.
func (a *adminClient) reachError(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot reach the daemon at %s: is `agentca serve` running for this --dir?", a.sock)
	}
	return err
}

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "join tokens (create, through the running daemon) and access tokens (get, over mTLS)",
		Subcommands: []*cli.Command{{
			Name:  "create",
			Usage: "print a new single-use join token bound to a SPIFFE ID",
			Flags: []cli.Flag{
				dirFlag(),
				&cli.StringFlag{Name: "spiffe-id", Usage: "the SPIFFE ID the token enrolls, e.g. spiffe://example.org/agent/x", EnvVars: []string{"AGENTCA_SPIFFE_ID"}},
				&cli.DurationFlag{Name: "ttl", Usage: "how long the token stays usable", DefaultText: "the provisioner's token_ttl, 15m", EnvVars: []string{"AGENTCA_TOKEN_TTL"}},
				&cli.IntFlag{Name: "count", Usage: "number of tokens, one per line", Value: 1, EnvVars: []string{"AGENTCA_TOKEN_COUNT"}},
				&cli.StringFlag{Name: "provisioner", Usage: "join-token provisioner name (default: the only one)", EnvVars: []string{"AGENTCA_PROVISIONER"}},
				&cli.BoolFlag{Name: "json", Usage: "print the tokens as JSON with their expiry"},
			},
			Action: func(c *cli.Context) error {
				if c.String("spiffe-id") == "" {
					return usagef("--spiffe-id is required")
				}
				if c.Int("count") < 1 {
					return usagef("--count must be at least 1")
				}
				req := wire.TokenRequest{SPIFFEID: c.String("spiffe-id"), Count: c.Int("count"), Provisioner: c.String("provisioner")}
				if d := c.Duration("ttl"); d != 0 {
					req.TTL = d.String()
				}
				var resp wire.TokenResponse
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/tokens", req, &resp); err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(resp)
				}
				var b bytes.Buffer
				for _, t := range resp.Tokens {
					b.WriteString(t.Token + "\n")
				}
				_, err := c.App.Writer.Write(b.Bytes())
				return err
			},
		}, tokenGetCommand(), tokenExchangeCommand()},
	}
}

func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "inspect issued certificates (talks to the running daemon)",
		Subcommands: []*cli.Command{{
			Name:  "list",
			Usage: "list issued certificates in serial order",
			Flags: []cli.Flag{
				dirFlag(),
				&cli.StringFlag{Name: "spiffe-id", Usage: "only certificates naming this SPIFFE ID"},
				&cli.BoolFlag{Name: "revoked", Usage: "only revoked certificates"},
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			},
			Action: func(c *cli.Context) error {
				adm := newAdminClient(c.String("dir"))
				var all []wire.CertInfo
				after := ""
				for {
					q := url.Values{"limit": {"1000"}}
					if id := c.String("spiffe-id"); id != "" {
						q.Set("spiffe_id", id)
					}
					if after != "" {
						q.Set("after", after)
					}
					var page wire.CertList
					if err := adm.do(c.Context, http.MethodGet, "/admin/v1/certs?"+q.Encode(), nil, &page); err != nil {
						return err
					}
					for _, ci := range page.Certificates {
						if !c.Bool("revoked") || ci.Revoked {
							all = append(all, ci)
						}
					}
					if len(page.Certificates) < 1000 {
						break
					}
					after = page.Certificates[len(page.Certificates)-1].Serial
				}
				if c.Bool("json") {
					if all == nil {
						all = []wire.CertInfo{}
					}
					return json.NewEncoder(c.App.Writer).Encode(all)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tSPIFFE ID\tPROVISIONER\tNOT AFTER\tSTATUS")
				now := time.Now()
				for _, ci := range all {
					status := "valid"
					switch {
					case ci.Revoked:
						status = "revoked"
					case now.After(ci.NotAfter):
						status = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ci.Serial, ci.SPIFFEID, ci.Provisioner, ci.NotAfter.Format(time.RFC3339), status)
				}
				return tw.Flush()
			},
		}},
	}
}

func tofuCommand() *cli.Command {
	return &cli.Command{
		Name:  "tofu",
		Usage: "manage trust-on-first-use entries (talks to the running daemon)",
		Subcommands: []*cli.Command{{
			Name:  "clear",
			Usage: "let an instance enroll again: remove its replay key (e.g. aws-iid:<provisioner>:<account>:<instance-id>)",
			Flags: []cli.Flag{
				dirFlag(),
				&cli.StringFlag{Name: "key", Usage: "the replay key, as in the refusal's audit line and docs/provisioners/*.md", EnvVars: []string{"AGENTCA_REPLAY_KEY"}},
			},
			Action: func(c *cli.Context) error {
				if c.String("key") == "" {
					return usagef("--key is required")
				}
				var resp wire.ReplayKeyResponse
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/replay-keys/clear",
					wire.ReplayKeyRequest{Key: c.String("key")}, &resp); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "Cleared %s (first used by certificate %s)\n", resp.Key, resp.Serial)
				return nil
			},
		}},
	}
}
