package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

// jwtSVIDCommand is `agentca jwt-svid`: one JWT-SVID for the SPIFFE ID of
// the credentials in --out, fetched over mTLS (docs/jwt-svid.md).
func jwtSVIDCommand() *cli.Command {
	return &cli.Command{
		Name:  "jwt-svid",
		Usage: "fetch a JWT-SVID for the certificate in --out over mTLS and print it",
		Flags: []cli.Flag{
			caFlag(), outFlag(),
			&cli.StringSliceFlag{Name: "audience", Usage: "an audience of the JWT-SVID (repeat for several; at least one)", EnvVars: []string{"AGENTCA_JWT_AUDIENCE"}},
			&cli.DurationFlag{Name: "ttl", Usage: "lifetime to ask for, capped by jwt_svid.max_ttl and the certificate's expiry", DefaultText: "the CA's, 5m", EnvVars: []string{"AGENTCA_JWT_TTL"}},
			&cli.BoolFlag{Name: "json", Usage: `print {"token","spiffe_id","expires_at"} instead of the bare token`, EnvVars: []string{"AGENTCA_JSON"}},
		},
		Action: func(c *cli.Context) error {
			caURL, out, aud := c.String("ca"), c.String("out"), c.StringSlice("audience")
			if caURL == "" || out == "" || len(aud) == 0 {
				return usagef("--ca, --out and --audience are required")
			}
			cur, client, err := enrolled(caURL, out)
			if err != nil {
				return err
			}
			svid, err := client.JWTSVID(c.Context, cur.TLSCertificate(), aud, c.Duration("ttl"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				b, err := json.Marshal(svid)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, string(b))
				return nil
			}
			fmt.Fprintln(c.App.Writer, svid.Token)
			return nil
		},
	}
}
