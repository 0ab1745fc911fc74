package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/agentca/agentca/agent"
	"github.com/urfave/cli/v2"
)

// maxSubjectToken bounds a subject token read from a file or stdin.
const maxSubjectToken = 16 << 10

// tokenExchangeCommand is `agentca token exchange`: an RFC 8693 exchange
// of a token this agent received for one to the next hop, bound to the
// certificate in --out (docs/delegation.md).
func tokenExchangeCommand() *cli.Command {
	return &cli.Command{
		Name:  "exchange",
		Usage: "exchange a token this agent received (a user's, or another agent's) for one to the next hop, bound to the certificate in --out (RFC 8693)",
		Flags: []cli.Flag{
			caFlag(), outFlag(),
			&cli.StringFlag{Name: "subject-token", Usage: "the token to exchange (prefer --subject-token-file: a command line is visible to other users)", EnvVars: []string{"AGENTCA_SUBJECT_TOKEN"}},
			&cli.StringFlag{Name: "subject-token-file", Usage: "file holding the token to exchange ('-': standard input)", EnvVars: []string{"AGENTCA_SUBJECT_TOKEN_FILE"}},
			&cli.StringFlag{Name: "subject-token-type", Usage: "its RFC 8693 type: jwt, access_token or id_token", Value: "jwt", EnvVars: []string{"AGENTCA_SUBJECT_TOKEN_TYPE"}},
			&cli.StringSliceFlag{Name: "scope", Usage: "scope to ask for (repeat, or separate with commas); default the subject token's", EnvVars: []string{"AGENTCA_SCOPE"}},
			&cli.StringSliceFlag{Name: "resource", Usage: "resource (RFC 8707) the token is for, an absolute URI (repeatable)", EnvVars: []string{"AGENTCA_RESOURCE"}},
			&cli.StringSliceFlag{Name: "audience", Usage: "audience the token is for, e.g. the next agent's SPIFFE ID (repeatable)", EnvVars: []string{"AGENTCA_AUDIENCE"}},
			&cli.DurationFlag{Name: "ttl", Usage: "token lifetime to ask for, e.g. 2m (never past the subject token)", DefaultText: "the CA's, 5m", EnvVars: []string{"AGENTCA_TOKEN_LIFETIME"}},
			&cli.BoolFlag{Name: "json", Usage: "print the token endpoint's JSON answer", EnvVars: []string{"AGENTCA_TOKEN_EXCHANGE_JSON"}},
		},
		Action: tokenExchange,
	}
}

func tokenExchange(c *cli.Context) error {
	caURL, out := c.String("ca"), c.String("out")
	if caURL == "" || out == "" {
		return usagef("--ca and --out are required")
	}
	if (c.String("subject-token") == "") == (c.String("subject-token-file") == "") {
		return usagef("give one of --subject-token and --subject-token-file")
	}
	if len(c.StringSlice("resource"))+len(c.StringSlice("audience")) == 0 {
		return usagef("give --resource or --audience")
	}
	typ := c.String("subject-token-type")
	switch typ {
	case "jwt", "access_token", "id_token":
		typ = "urn:ietf:params:oauth:token-type:" + typ
	default:
		return usagef("--subject-token-type must be jwt, access_token or id_token")
	}
	subject := c.String("subject-token")
	if f := c.String("subject-token-file"); f != "" {
		var r io.Reader = c.App.Reader
		if f != "-" {
			file, err := os.Open(f)
			if err != nil {
				return err
			}
			defer file.Close()
			r = file
		}
		b, err := io.ReadAll(io.LimitReader(r, maxSubjectToken+1))
		if err != nil {
			return err
		}
		if len(b) > maxSubjectToken {
			return fmt.Errorf("the subject token is longer than %d bytes", maxSubjectToken)
		}
		subject = strings.TrimSpace(string(b))
	}
	if subject == "" {
		return fmt.Errorf("the subject token is empty")
	}
	cur, client, err := enrolled(caURL, out)
	if err != nil {
		return err
	}
	tok, err := client.Exchange(c.Context, cur.TLSCertificate(), agent.ExchangeRequest{SubjectToken: subject, SubjectTokenType: typ,
		Scope: c.StringSlice("scope"), Resource: c.StringSlice("resource"), Audience: c.StringSlice("audience"), TTL: c.Duration("ttl")})
	if err != nil {
		return err
	}
	return printToken(c, tok)
}
