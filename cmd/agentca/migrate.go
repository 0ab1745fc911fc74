package main

import (
	"fmt"

	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/urfave/cli/v2"
)

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "move a CA kept in its bbolt file into etcd, so several replicas can serve it (stop agentca serve first; see docs/ha.md)",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringSliceFlag{Name: "etcd-endpoints", Usage: "etcd client URLs, comma-separated", EnvVars: []string{"AGENTCA_ETCD_ENDPOINTS"}},
			&cli.StringFlag{Name: "etcd-prefix", Usage: "prefix of every etcd key; it must be new", Value: config.DefaultEtcdPrefix, EnvVars: []string{"AGENTCA_ETCD_PREFIX"}},
			&cli.StringFlag{Name: "etcd-ca-file", Usage: "CA certificates that verify etcd's (https endpoints); a relative path is in --dir, as in agentca.json"},
			&cli.StringFlag{Name: "etcd-cert-file", Usage: "client certificate for etcd (relative: in --dir)"},
			&cli.StringFlag{Name: "etcd-key-file", Usage: "its key (relative: in --dir)"},
			&cli.StringFlag{Name: "etcd-username", Usage: "etcd user (with --etcd-password-file)"},
			&cli.StringFlag{Name: "etcd-password-file", Usage: "file holding the etcd user's password (relative: in --dir)"},
			&cli.IntFlag{Name: "etcd-max-txn-ops", Usage: "the cluster's --max-txn-ops", DefaultText: "etcd's, 128"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("migrate takes no arguments")
			}
			eps := etcdEndpoints(c)
			if len(eps) == 0 {
				return usagef("migrate needs --etcd-endpoints")
			}
			res, err := daemon.Migrate(c.Context, daemon.MigrateOptions{Dir: c.String("dir"), Storage: config.Storage{
				Type: "etcd", Endpoints: eps, Prefix: c.String("etcd-prefix"),
				CAFile: c.String("etcd-ca-file"), CertFile: c.String("etcd-cert-file"), KeyFile: c.String("etcd-key-file"),
				Username: c.String("etcd-username"), PasswordFile: c.String("etcd-password-file"), MaxTxnOps: c.Int("etcd-max-txn-ops"),
			}})
			if err != nil {
				return err
			}
			w := c.App.Writer
			s := res.Stats
			anchors := "no trust anchors (the daemon records them when it starts)"
			if s.Anchors {
				anchors = "the trust anchors"
			}
			fmt.Fprintf(w, "Copied into etcd: %d certificates (%d revoked), %d join tokens, %d replay keys, %d ended tasks, %d log entries, %s\n",
				s.Certificates, s.Revoked, s.JoinTokens, s.ReplayKeys, s.Tasks, s.LogEntries, anchors)
			fmt.Fprintf(w, "Issuance log: size %d, root %x (audited: entries, tree, signed tree head and records agree)\n", res.LogSize, res.Root)
			fmt.Fprintf(w, "Configuration: %s now uses etcd; the previous one is %s\n", res.ConfigPath, res.Backup)
			fmt.Fprintf(w, "The bbolt file %s is unchanged and no longer used: keep it until the replicas serve, then remove it\n", res.From)
			return nil
		},
	}
}
