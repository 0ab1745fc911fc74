package main

import (
	"github.com/agentca/agentca/agent"
	"github.com/urfave/cli/v2"
)

// federatesWithFlag names the federated trust domains whose bundles enroll
// and the node agent fetch from the CA (docs/federation.md).
func federatesWithFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "federates-with",
		Usage:   "a federated trust domain (e.g. b.example) whose bundle to fetch from the CA and write as bundle.<td>.pem; repeat or comma-separate",
		EnvVars: []string{"AGENTCA_FEDERATES_WITH"}}
}

// federatesWith reads --federates-with; a bad name is a usage error.
func federatesWith(c *cli.Context) ([]string, error) {
	names := c.StringSlice("federates-with")
	if _, err := agent.ParseTrustDomains(names); err != nil {
		return nil, usagef("--federates-with: %v", err)
	}
	return names, nil
}
