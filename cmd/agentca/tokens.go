package main

import (
	"encoding/json"
	"fmt"

	"github.com/agentca/agentca/agent"
	"github.com/urfave/cli/v2"
)

// tokenGetCommand is `agentca token get`: an access token bound to the
// certificate in --out (docs/tokens.md).
func tokenGetCommand() *cli.Command {
	return &cli.Command{
		Name:  "get",
		Usage: "print an access token bound to the certificate in --out (OAuth 2.0 client credentials over mTLS)",
		Flags: []cli.Flag{
			caFlag(), outFlag(),
			&cli.StringSliceFlag{Name: "scope", Usage: "scope to ask for (repeat, or separate with commas)", EnvVars: []string{"AGENTCA_SCOPE"}},
			&cli.StringSliceFlag{Name: "resource", Usage: "resource (RFC 8707) the token is for, an absolute URI (repeatable)", EnvVars: []string{"AGENTCA_RESOURCE"}},
			&cli.StringSliceFlag{Name: "audience", Usage: "audience the token is for, when not a resource URI (repeatable)", EnvVars: []string{"AGENTCA_AUDIENCE"}},
			&cli.StringFlag{Name: "task", Usage: "the task the certificate was issued for (must match it)", EnvVars: []string{"AGENTCA_TASK"}},
			&cli.DurationFlag{Name: "ttl", Usage: "token lifetime to ask for, e.g. 15m", DefaultText: "the CA's, 5m", EnvVars: []string{"AGENTCA_TOKEN_LIFETIME"}},
			&cli.BoolFlag{Name: "json", Usage: "print the token endpoint's JSON answer"},
		},
		Action: func(c *cli.Context) error {
			caURL, out := c.String("ca"), c.String("out")
			if caURL == "" || out == "" {
				return usagef("--ca and --out are required")
			}
			if len(c.StringSlice("scope")) == 0 {
				return usagef("--scope is required")
			}
			if len(c.StringSlice("resource"))+len(c.StringSlice("audience")) == 0 {
				return usagef("give --resource or --audience")
			}
			cur, client, err := enrolled(caURL, out)
			if err != nil {
				return err
			}
			tok, err := client.Token(c.Context, cur.TLSCertificate(), agent.TokenRequest{Scope: c.StringSlice("scope"),
				Resource: c.StringSlice("resource"), Audience: c.StringSlice("audience"), Task: c.String("task"), TTL: c.Duration("ttl")})
			if err != nil {
				return err
			}
			return printToken(c, tok)
		},
	}
}

// printToken writes an issued or exchanged token: the whole response with
// --json, else the access token alone on one line.
func printToken(c *cli.Context, tok *agent.Token) error {
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(tok)
	}
	_, err := fmt.Fprintln(c.App.Writer, tok.AccessToken)
	return err
}
