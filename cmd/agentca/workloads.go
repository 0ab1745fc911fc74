package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/agentca/agentca/wire"
	"github.com/agentca/agentca/workloads"
	"github.com/urfave/cli/v2"
)

func workloadsCommand() *cli.Command {
	return &cli.Command{
		Name:  "workloads",
		Usage: "workload identities: which SPIFFE IDs which node agents may hand out (talks to the running daemon)",
		Subcommands: []*cli.Command{{
			Name:  "create",
			Usage: "define a workload identity",
			Flags: []cli.Flag{
				dirFlag(),
				&cli.StringFlag{Name: "id", Usage: "the definition's name (default: a random one)", EnvVars: []string{"AGENTCA_WORKLOAD_ID"}},
				&cli.StringFlag{Name: "spiffe-id", Usage: "a SPIFFE ID, or a template such as spiffe://example.org/ns/{{k8s:ns}}/sa/{{k8s:sa}}", EnvVars: []string{"AGENTCA_SPIFFE_ID"}},
				&cli.StringSliceFlag{Name: "selector", Usage: "TYPE:NAME:VALUE the caller must have (repeat; all are required), e.g. unix:uid:1000", EnvVars: []string{"AGENTCA_WORKLOAD_SELECTORS"}},
				&cli.StringSliceFlag{Name: "node", Usage: "a node SPIFFE ID, or a prefix ending in /*, that may hand it out (repeat)", EnvVars: []string{"AGENTCA_WORKLOAD_NODES"}},
				&cli.StringSliceFlag{Name: "node-provisioner", Usage: "nodes vouched for by this provisioner may hand it out (repeat)", EnvVars: []string{"AGENTCA_WORKLOAD_NODE_PROVISIONERS"}},
				&cli.StringFlag{Name: "node-condition", Usage: `a CEL expression over the node certificate's claims, spiffe_id and provisioner that must also hold, e.g. claims["kubernetes.io.namespace"] == "prod"`, EnvVars: []string{"AGENTCA_WORKLOAD_NODE_CONDITION"}},
				&cli.DurationFlag{Name: "ttl", Usage: "the SVIDs' lifetime", DefaultText: "the node provisioner's", EnvVars: []string{"AGENTCA_WORKLOAD_TTL"}},
				&cli.BoolFlag{Name: "json", Usage: "print the definition as JSON"},
			},
			Action: func(c *cli.Context) error {
				d := workloads.Definition{ID: c.String("id"), SPIFFEID: c.String("spiffe-id"), Selectors: c.StringSlice("selector"),
					Nodes: c.StringSlice("node"), NodeProvisioners: c.StringSlice("node-provisioner"), NodeCondition: c.String("node-condition")}
				if d.SPIFFEID == "" || len(d.Selectors) == 0 {
					return usagef("--spiffe-id and at least one --selector are required")
				}
				if len(d.Nodes)+len(d.NodeProvisioners) == 0 && d.NodeCondition == "" {
					return usagef("name the nodes that may hand it out: --node, --node-provisioner or --node-condition")
				}
				if t := c.Duration("ttl"); t != 0 {
					d.TTL = t.String()
				}
				var out workloads.Definition
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/workloads", d, &out); err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(out)
				}
				fmt.Fprintf(c.App.Writer, "Created workload %s: %s\n", out.ID, out.SPIFFEID)
				return nil
			},
		}, {
			Name:  "list",
			Usage: "list the workload identities",
			Flags: []cli.Flag{dirFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
			Action: func(c *cli.Context) error {
				var set workloads.Set
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodGet, "/admin/v1/workloads", nil, &set); err != nil {
					return err
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(set)
				}
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSPIFFE ID\tSELECTORS\tNODES\tTTL")
				for _, d := range set.Definitions {
					nodes := append(append([]string{}, d.Nodes...), prefixAll("provisioner:", d.NodeProvisioners)...)
					if d.NodeCondition != "" {
						nodes = append(nodes, "if:"+d.NodeCondition)
					}
					ttl := d.TTL
					if ttl == "" {
						ttl = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.SPIFFEID, strings.Join(d.Selectors, ","), strings.Join(nodes, ","), ttl)
				}
				return tw.Flush()
			},
		}, {
			Name:      "delete",
			Usage:     "delete a workload identity (SVIDs already issued live out their short lifetime; revoke them to end them now)",
			ArgsUsage: "ID",
			Flags:     []cli.Flag{dirFlag()},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("give the definition's ID: agentca workloads delete ID")
				}
				var out workloads.Definition
				if err := newAdminClient(c.String("dir")).do(c.Context, http.MethodPost, "/admin/v1/workloads/delete",
					wire.WorkloadDeleteRequest{ID: c.Args().First()}, &out); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "Deleted workload %s (%s)\n", out.ID, out.SPIFFEID)
				return nil
			},
		}},
	}
}

func prefixAll(p string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = p + v
	}
	return out
}
