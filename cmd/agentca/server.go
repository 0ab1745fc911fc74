package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/internal/logwriter"
	"github.com/urfave/cli/v2"
)

func dirFlag() cli.Flag {
	return &cli.StringFlag{Name: "dir", Usage: "the CA's state directory", Value: "agentca-data", EnvVars: []string{"AGENTCA_DIR"}}
}

func passwordFlag() cli.Flag {
	return &cli.StringFlag{Name: "password-file", Usage: "file holding the password that encrypts the CA keys", EnvVars: []string{"AGENTCA_PASSWORD_FILE"}}
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a new CA (root, issuing CA, config, store) in --dir",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringFlag{Name: "trust-domain", Usage: "SPIFFE trust domain, e.g. example.org", EnvVars: []string{"AGENTCA_TRUST_DOMAIN"}},
			&cli.StringFlag{Name: "name", Usage: "name in the CA certificates' subjects", Value: "agentca", EnvVars: []string{"AGENTCA_NAME"}},
			&cli.StringFlag{Name: "key-type", Usage: "CA key type: ec-p256, ec-p384, ed25519 or rsa-2048", Value: "ec-p256", EnvVars: []string{"AGENTCA_KEY_TYPE"}},
			&cli.StringFlag{Name: "https", Usage: "HTTPS listen address", Value: "127.0.0.1:8443", EnvVars: []string{"AGENTCA_HTTPS"}},
			&cli.StringFlag{Name: "http", Usage: "plain HTTP listen address", Value: "127.0.0.1:8080", EnvVars: []string{"AGENTCA_HTTP"}},
			passwordFlag(),
			&cli.StringFlag{Name: "kms", Usage: "create the CA keys in this KMS instead of files, e.g. 'pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=agentca?pin-source=/etc/agentca/pin' (see docs/keys.md)", EnvVars: []string{"AGENTCA_KMS"}},
			&cli.StringFlag{Name: "storage", Usage: "store backend: bbolt (a file in --dir) or etcd (shared by several replicas; see docs/ha.md)", Value: "bbolt", EnvVars: []string{"AGENTCA_STORAGE"}},
			&cli.StringSliceFlag{Name: "etcd-endpoints", Usage: "etcd client URLs, comma-separated (with --storage etcd)", EnvVars: []string{"AGENTCA_ETCD_ENDPOINTS"}},
			&cli.StringFlag{Name: "etcd-prefix", Usage: "prefix of every etcd key (with --storage etcd)", Value: config.DefaultEtcdPrefix, EnvVars: []string{"AGENTCA_ETCD_PREFIX"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("init takes no arguments")
			}
			if c.String("kms") != "" && !ca.IsKMSURI(c.String("kms")) {
				return usagef("--kms: want a pkcs11: URI, got %q", c.String("kms"))
			}
			if c.String("trust-domain") == "" {
				return usagef("--trust-domain is required")
			}
			kt, err := ca.ParseKeyType(c.String("key-type"))
			if err != nil {
				return usagef("--key-type: %v", err)
			}
			storage, err := initStorage(c)
			if err != nil {
				return err
			}
			pw, err := daemon.ReadPassword(c.String("password-file"))
			if err != nil {
				return err
			}
			res, err := daemon.Init(c.Context, daemon.InitOptions{
				Dir: c.String("dir"), TrustDomain: c.String("trust-domain"), Name: c.String("name"),
				KeyType: kt, HTTPS: c.String("https"), HTTP: c.String("http"), Password: pw, KMS: c.String("kms"),
				Storage: storage,
			})
			if err != nil {
				return err
			}
			w := c.App.Writer
			fmt.Fprintf(w, "Created a CA for trust domain %s in %s\n", res.TrustDomain, filepath.Dir(res.ConfigPath))
			fmt.Fprintf(w, "Root fingerprint (SHA-256): %s\n", res.Root)
			fmt.Fprintf(w, "Trust anchors: %s\n", res.RootPath)
			fmt.Fprintf(w, "Configuration: %s\n", res.ConfigPath)
			return nil
		},
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the CA daemon (SIGTERM drains and exits 0, SIGHUP reloads provisioners)",
		Flags: []cli.Flag{
			dirFlag(),
			&cli.StringFlag{Name: "https", Usage: "HTTPS listen address (overrides agentca.json)", EnvVars: []string{"AGENTCA_HTTPS"}},
			&cli.StringFlag{Name: "http", Usage: "plain HTTP listen address (overrides agentca.json)", EnvVars: []string{"AGENTCA_HTTP"}},
			passwordFlag(),
			&cli.StringFlag{Name: "ready-file", Usage: "write this file (JSON: https, http, pid) once every listener accepts; removed at exit", EnvVars: []string{"AGENTCA_READY_FILE"}},
			&cli.BoolFlag{Name: "accept-rollback", Usage: "start on a store whose issuance log lacks the last tree head this CA published (an older backup restored), accepting the loss; logged as an audit line (docs/operations.md)", EnvVars: []string{"AGENTCA_ACCEPT_ROLLBACK"}},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("serve takes no arguments")
			}
			dir := c.String("dir")
			cfg, err := config.Load(filepath.Join(dir, config.FileName))
			if err != nil {
				return err
			}
			log, lw, err := newLogger(c, cfg.Logging)
			if err != nil {
				return err
			}
			defer lw.Close()
			pw, err := daemon.ReadPassword(c.String("password-file"))
			if err != nil {
				return err
			}
			opts := daemon.ServeOptions{Dir: dir, HTTPS: c.String("https"), HTTP: c.String("http"), Password: pw, Logger: log,
				AcceptRollback: c.Bool("accept-rollback")}
			if f := c.String("ready-file"); f != "" {
				_ = os.Remove(f) // a stale file from an earlier run must not say ready
				opts.Ready = func(httpsAddr, httpAddr string) {
					if err := writeReadyFile(f, httpsAddr, httpAddr); err != nil {
						log.Error("writing --ready-file", "err", err)
					}
				}
				defer os.Remove(f)
			}
			return daemon.Serve(c.Context, opts)
		},
	}
}

// newLogger builds the daemon's logger: flags win over agentca.json. Lines
// go to stderr through a logwriter.Writer, which the caller closes (defer,
// right away) on every way out, so that they all appear before main's
// error line.
func newLogger(c *cli.Context, lc config.LogConfig) (*slog.Logger, *logwriter.Writer, error) {
	format, level := lc.Format, lc.Level
	if f := c.String("log-format"); f != "" {
		format = f
	}
	if l := c.String("log-level"); l != "" {
		level = l
	}
	var lv slog.Level
	switch level {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, nil, usagef("--log-level: want debug, info, warn or error, got %q", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		lw := logwriter.New(os.Stderr, logwriter.Options{})
		return slog.New(slog.NewTextHandler(lw, opts)), lw, nil
	case "json":
		lw := logwriter.New(os.Stderr, logwriter.Options{})
		return slog.New(slog.NewJSONHandler(lw, opts)), lw, nil
	}
	return nil, nil, usagef("--log-format: want text or json, got %q", format)
}

// initStorage reads init's --storage, --etcd-endpoints and --etcd-prefix:
// nil for bbolt, the etcd settings otherwise.
func initStorage(c *cli.Context) (*config.Storage, error) {
	switch c.String("storage") {
	case "bbolt":
		if c.IsSet("etcd-endpoints") || c.IsSet("etcd-prefix") {
			return nil, usagef("--etcd-endpoints and --etcd-prefix need --storage etcd")
		}
		return nil, nil
	case "etcd":
		eps := etcdEndpoints(c)
		if len(eps) == 0 {
			return nil, usagef("--storage etcd needs --etcd-endpoints")
		}
		return &config.Storage{Type: "etcd", Endpoints: eps, Prefix: c.String("etcd-prefix")}, nil
	}
	return nil, usagef("--storage: want bbolt or etcd, got %q", c.String("storage"))
}

// etcdEndpoints reads --etcd-endpoints: repeated, or comma-separated.
func etcdEndpoints(c *cli.Context) []string {
	var eps []string
	for _, v := range c.StringSlice("etcd-endpoints") {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
	}
	return eps
}
