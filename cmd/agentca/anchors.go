package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/agentca/agentca/wire"
	"github.com/urfave/cli/v2"
)

// anchorsCommand is `agentca anchors`: trust-anchor rotation over the admin
// socket (docs/anchors.md).
func anchorsCommand() *cli.Command {
	forceFlag := func(usage string) cli.Flag {
		return &cli.BoolFlag{Name: "force", Usage: usage, EnvVars: []string{"AGENTCA_FORCE"}}
	}
	list := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name:  name,
			Usage: usage,
			Flags: []cli.Flag{dirFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON", EnvVars: []string{"AGENTCA_JSON"}}},
			Action: func(c *cli.Context) error {
				var all []wire.AnchorStatus
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodGet, "/admin/v1/anchors", nil, &all); err != nil {
					return err
				}
				if c.Bool("json") {
					if all == nil {
						all = []wire.AnchorStatus{}
					}
					return json.NewEncoder(c.App.Writer).Encode(all)
				}
				return printAnchors(c.App.Writer, all, name == "status")
			},
		}
	}
	transition := func(name, usage, path string, force cli.Flag) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "ID",
			Flags:     []cli.Flag{dirFlag(), force},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("want exactly one anchor ID (see agentca anchors list)")
				}
				var st wire.AnchorStatus
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, path,
					wire.AnchorRequest{ID: c.Args().First(), Force: c.Bool("force")}, &st); err != nil {
					return err
				}
				return printAnchors(c.App.Writer, []wire.AnchorStatus{st}, true)
			},
		}
	}
	return &cli.Command{
		Name:  "anchors",
		Usage: "rotate trust anchors: list, stage, activate, retire (talks to the running daemon)",
		Subcommands: []*cli.Command{
			list("list", "list the trust anchors and their states"),
			list("status", "per anchor: state, certificates still valid, and whether activate/retire is safe"),
			{
				Name:  "stage",
				Usage: "create a new root and issuing CA (or only an issuing CA) and publish the root at once",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.BoolFlag{Name: "intermediate-only", Usage: "a new issuing CA under the current root", EnvVars: []string{"AGENTCA_INTERMEDIATE_ONLY"}},
					&cli.BoolFlag{Name: "cross-sign", Usage: "also certify the new issuing CA with the current root", EnvVars: []string{"AGENTCA_CROSS_SIGN"}},
				},
				Action: func(c *cli.Context) error {
					var st wire.AnchorStatus
					if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/anchors/stage",
						wire.StageRequest{IntermediateOnly: c.Bool("intermediate-only"), CrossSign: c.Bool("cross-sign")}, &st); err != nil {
						return err
					}
					return printAnchors(c.App.Writer, []wire.AnchorStatus{st}, true)
				},
			},
			transition("activate", "make a staged anchor the issuer; the active one starts retiring", "/admin/v1/anchors/activate",
				forceFlag("activate even though the anchor was staged less than one longest leaf lifetime ago")),
			transition("retire", "stop publishing a retiring (or staged) anchor", "/admin/v1/anchors/retire",
				forceFlag("retire even though certificates it issued are still valid")),
		},
	}
}

func printAnchors(w io.Writer, all []wire.AnchorStatus, details bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if details {
		fmt.Fprintln(tw, "ID\tSTATE\tROOT SHA-256\tVALID CERTS\tACTIVATE\tRETIRE\tNOTE")
	} else {
		fmt.Fprintln(tw, "ID\tSTATE\tROOT SHA-256\tISSUER SKI\tNOT AFTER")
	}
	yes := func(b bool) string {
		if b {
			return "safe"
		}
		return "-"
	}
	for _, a := range all {
		if details {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", a.ID, a.State, a.RootSHA256, a.Unexpired, yes(a.SafeToActivate), yes(a.SafeToRetire), a.Note)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.ID, a.State, a.RootSHA256, a.IssuerSKI, a.NotAfter.Format(time.RFC3339))
		}
	}
	return tw.Flush()
}
