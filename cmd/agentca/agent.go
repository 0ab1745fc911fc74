package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/urfave/cli/v2"
)

func caFlag() cli.Flag {
	return &cli.StringFlag{Name: "ca", Usage: "the CA's HTTPS URL, e.g. https://127.0.0.1:8443", EnvVars: []string{"AGENTCA_CA"}}
}

func outFlag() cli.Flag {
	return &cli.StringFlag{Name: "out", Usage: "directory for cert.pem, key.pem and bundle.pem", EnvVars: []string{"AGENTCA_OUT"}}
}

// attestationFlags are the flags enroll and the node agent share: where the
// CA is, how to trust it, and how to attest.
func attestationFlags() []cli.Flag {
	return []cli.Flag{
		caFlag(),
		&cli.StringFlag{Name: "root", Usage: "PEM file with the CA's root(s) to trust", EnvVars: []string{"AGENTCA_ROOT"}},
		&cli.StringFlag{Name: "fingerprint", Usage: "SHA-256 fingerprint (hex) of the CA's root, to fetch and pin the roots", EnvVars: []string{"AGENTCA_FINGERPRINT"}},
		&cli.StringFlag{Name: "provisioner", Usage: "provisioner name", Value: "join", EnvVars: []string{"AGENTCA_PROVISIONER"}},
		&cli.StringFlag{Name: "token", Usage: "the attestation token (a join token)", EnvVars: []string{"AGENTCA_TOKEN"}},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the token; re-read when the agent must enroll again", EnvVars: []string{"AGENTCA_TOKEN_FILE"}},
		&cli.BoolFlag{Name: "k8s", Usage: "attest with the Kubernetes projected service-account token (--token-file, default " + agent.DefaultK8sTokenPath + ")", EnvVars: []string{"AGENTCA_K8S"}},
		&cli.BoolFlag{Name: "aws-iid", Usage: "attest with the AWS instance identity document (IMDSv2)", EnvVars: []string{"AGENTCA_AWS_IID"}},
		&cli.BoolFlag{Name: "gcp", Usage: "attest with the GCP instance identity token (format=full, audience --audience)", EnvVars: []string{"AGENTCA_GCP"}},
		&cli.BoolFlag{Name: "azure", Usage: "attest with an Azure managed-identity token (resource --audience)", EnvVars: []string{"AGENTCA_AZURE"}},
		&cli.BoolFlag{Name: "azure-imds", Usage: "attest with Azure IMDS attested data bound to a CA challenge", EnvVars: []string{"AGENTCA_AZURE_IMDS"}},
		&cli.StringFlag{Name: "audience", Usage: "audience (GCP) or resource (Azure) of the requested token: the provisioner's configured audience", Value: "agentca", EnvVars: []string{"AGENTCA_AUDIENCE"}},
		&cli.StringFlag{Name: "metadata-url", Usage: "override the cloud metadata endpoint (tests, proxies)", EnvVars: []string{"AGENTCA_METADATA_URL"}},
	}
}

func enrollCommand() *cli.Command {
	return &cli.Command{
		Name:  "enroll",
		Usage: "get a certificate: make a key locally, prove identity, write cert.pem, key.pem, bundle.pem",
		Flags: append(attestationFlags(),
			outFlag(),
			&cli.StringFlag{Name: "key-type", Usage: "leaf key type: ec-p256, ec-p384, ed25519 or rsa-2048", Value: "ec-p256", EnvVars: []string{"AGENTCA_KEY_TYPE"}},
			&cli.DurationFlag{Name: "ttl", Usage: "certificate lifetime to ask for, e.g. 15m", DefaultText: "the CA's", EnvVars: []string{"AGENTCA_TTL"}},
			&cli.StringFlag{Name: "task", Usage: "the task these certificates are for (recorded; 'agentca task end' revokes them)", EnvVars: []string{"AGENTCA_TASK"}},
			&cli.BoolFlag{Name: "daemon", Usage: "stay up and renew at 2/3 of the lifetime (SIGHUP renews now, SIGTERM exits 0)", EnvVars: []string{"AGENTCA_DAEMON"}},
			&cli.StringFlag{Name: "log-key", Usage: "the CA's issuance-log public key (log.pub.pem): refuse any certificate whose log receipt does not verify", EnvVars: []string{"AGENTCA_LOG_KEY"}},
			&cli.StringFlag{Name: "on-renew", Usage: "with --daemon, shell command run after each renewal", EnvVars: []string{"AGENTCA_ON_RENEW"}},
			federatesWithFlag(),
		),
		Action: enroll,
	}
}

func enroll(c *cli.Context) error {
	caURL, out := c.String("ca"), c.String("out")
	if caURL == "" || out == "" {
		return usagef("--ca and --out are required")
	}
	if (c.String("root") == "") == (c.String("fingerprint") == "") {
		return usagef("give exactly one of --root FILE or --fingerprint SHA256")
	}
	if fp := c.String("fingerprint"); fp != "" {
		if b, err := hex.DecodeString(strings.ReplaceAll(fp, ":", "")); err != nil || len(b) != sha256.Size {
			return usagef("--fingerprint must be a SHA-256 in hex (64 hex digits, colons allowed)")
		}
	}
	kind, err := attestationKind(c)
	if err != nil {
		return err
	}
	if _, err := agent.NewKey(c.String("key-type")); err != nil {
		return usagef("--key-type: %v", err)
	}
	if c.String("on-renew") != "" && !c.Bool("daemon") {
		return usagef("--on-renew needs --daemon")
	}
	federated, err := federatesWith(c)
	if err != nil {
		return err
	}
	log, lw, err := newLogger(c, config.LogConfig{})
	if err != nil {
		return err
	}
	defer lw.Close()
	roots, err := trustAnchors(c.Context, caURL, c.String("root"), c.String("fingerprint"))
	if err != nil {
		return err
	}
	provisioner := c.String("provisioner")
	if !c.IsSet("provisioner") && kind.provisioner != "" {
		provisioner = kind.provisioner
	}
	var logKey crypto.PublicKey
	if f := c.String("log-key"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if logKey, err = agent.ParseLogKey(b); err != nil {
			return err
		}
	}
	cfg := agent.Config{LogKey: logKey,
		CAURL: caURL, Roots: roots, Provisioner: provisioner, Attest: kind.attest(c, caURL, roots, provisioner),
		KeyType: c.String("key-type"), TTL: c.Duration("ttl"), Dir: out, Task: c.String("task"), FederatesWith: federated,
	}
	if !c.Bool("daemon") {
		src, err := agent.NewSource(c.Context, cfg)
		if err != nil {
			return err
		}
		defer src.Close()
		cr := src.Current()
		fmt.Fprintf(c.App.Writer, "Enrolled %s (serial %s), valid until %s; files in %s\n", cr.SPIFFEID, cr.Serial, cr.NotAfter.Format(time.RFC3339), out)
		return nil
	}
	resume(c, &cfg, kind, roots, log)
	cfg.Logger = log
	if cmd := c.String("on-renew"); cmd != "" {
		cfg.OnRenew = func(cr *agent.Credentials) { runHook(log, cmd, cr) }
	}
	return runDaemon(c.Context, cfg, log)
}

// resume makes a daemon restarted with valid files in cfg.Dir resume from
// them instead of spending a new attestation.
func resume(c *cli.Context, cfg *agent.Config, kind attestation, roots []*x509.Certificate, log *slog.Logger) {
	if cr, _, err := agent.LoadFiles(cfg.Dir); err == nil && time.Now().Before(cr.NotAfter) && verifies(cr, roots) {
		cfg.Initial = cr
		log.Info("resuming from existing credentials", "dir", cfg.Dir, "serial", cr.Serial, "not_after", cr.NotAfter.Format(time.RFC3339))
		return
	}
	// One attestation (a join token) is used once: do not let a daemon
	// restart with a consumed token loop. Re-enrolling after expiry
	// re-reads --token-file.
	if kind.name == "token" {
		token := c.String("token")
		used := false
		cfg.Attest = func(context.Context) (string, error) {
			if used {
				return "", errors.New("the --token was already used; give --token-file to enroll again after expiry")
			}
			used = true
			return token, nil
		}
	}
}

// runDaemon keeps the credentials fresh until SIGTERM (exit 0) or until the
// certificate expires with no way to enroll again (exit 1).
func runDaemon(ctx context.Context, cfg agent.Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	src, err := agent.NewSource(ctx, cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	cr := src.Current()
	log.Info("agent running", "spiffe_id", cr.SPIFFEID, "serial", cr.Serial, "not_after", cr.NotAfter.Format(time.RFC3339), "dir", cfg.Dir)
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping on signal")
			return nil
		case <-hup:
			log.Info("SIGHUP: renewing now")
			src.RenewNow()
		case <-src.Done():
			return src.Err()
		}
	}
}

// runHook runs the --on-renew command through sh; failures are logged.
func runHook(log *slog.Logger, command string, cr *agent.Credentials) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), "AGENTCA_SERIAL="+cr.Serial, "AGENTCA_SPIFFE_ID="+cr.SPIFFEID,
		"AGENTCA_NOT_AFTER="+cr.NotAfter.Format(time.RFC3339))
	outp, err := cmd.CombinedOutput()
	if err != nil {
		log.Warn("--on-renew command failed", "err", err, "output", strings.TrimSpace(string(outp)))
		return
	}
	log.Info("--on-renew command ran", "serial", cr.Serial)
}

func verifies(cr *agent.Credentials, roots []*x509.Certificate) bool {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range cr.Chain {
		inter.AddCert(c)
	}
	_, err := cr.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// trustAnchors reads --root or bootstraps with --fingerprint.
func trustAnchors(ctx context.Context, caURL, rootFile, fingerprint string) ([]*x509.Certificate, error) {
	if rootFile != "" {
		b, err := os.ReadFile(rootFile)
		if err != nil {
			return nil, err
		}
		roots, err := agent.ParseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("--root %s: %w", rootFile, err)
		}
		return roots, nil
	}
	return agent.Bootstrap(ctx, caURL, fingerprint)
}

func renewCommand() *cli.Command {
	return &cli.Command{
		Name:  "renew",
		Usage: "renew the certificate in --out over mTLS (one renewal, fresh key)",
		Flags: []cli.Flag{
			caFlag(), outFlag(),
			&cli.DurationFlag{Name: "ttl", Usage: "certificate lifetime to ask for, e.g. 15m", DefaultText: "the CA's", EnvVars: []string{"AGENTCA_TTL"}},
			&cli.BoolFlag{Name: "reuse-key", Usage: "keep the current key instead of making a new one"},
		},
		Action: func(c *cli.Context) error {
			caURL, out := c.String("ca"), c.String("out")
			if caURL == "" || out == "" {
				return usagef("--ca and --out are required")
			}
			cur, roots, err := agent.LoadFiles(out)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			for _, r := range roots {
				pool.AddCert(r)
			}
			client, err := agent.NewClient(caURL, pool)
			if err != nil {
				return err
			}
			var newKey crypto.Signer // nil keeps the current key
			if !c.Bool("reuse-key") {
				// The key of an earlier attempt that did not complete,
				// if any: a retry with another key would revoke the
				// lineage (renewal_reused).
				if newKey, err = agent.NextKey(out, agent.KeyTypeOf(cur.Key), cur); err != nil {
					return err
				}
			}
			cr, err := client.Renew(c.Context, cur.TLSCertificate(), newKey, c.Duration("ttl"))
			if err != nil {
				return err
			}
			if fresh, err := client.Roots(c.Context); err == nil {
				roots = fresh
			}
			if err := agent.WriteFiles(out, cr, roots); err != nil {
				return err
			}
			if err := agent.ClearPendingKey(out); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "Renewed %s (serial %s), valid until %s\n", cr.SPIFFEID, cr.Serial, cr.NotAfter.Format(time.RFC3339))
			return nil
		},
	}
}

// attestation is how enroll proves what it is.
type attestation struct {
	name        string // the flag that chose it
	provisioner string // default provisioner name for it
}

// attestationKind checks that exactly one attestation source was given.
func attestationKind(c *cli.Context) (attestation, error) {
	var kinds []attestation
	for _, k := range []attestation{{"k8s", "k8s"}, {"aws-iid", "aws"}, {"gcp", "gcp"}, {"azure", "azure"}, {"azure-imds", "azure-imds"}} {
		if c.Bool(k.name) {
			kinds = append(kinds, k)
		}
	}
	if c.String("token") != "" {
		kinds = append(kinds, attestation{name: "token"})
	}
	if c.String("token-file") != "" && !c.Bool("k8s") {
		kinds = append(kinds, attestation{name: "token-file"})
	}
	if len(kinds) != 1 {
		return attestation{}, usagef("give exactly one attestation: --token, --token-file, --k8s, --aws-iid, --gcp, --azure or --azure-imds")
	}
	return kinds[0], nil
}

// attest returns the function that fetches a fresh attestation each time
// the agent must enroll.
func (k attestation) attest(c *cli.Context, caURL string, roots []*x509.Certificate, provisioner string) func(context.Context) (string, error) {
	md := c.String("metadata-url")
	or := func(def string) string {
		if md != "" {
			return md
		}
		return def
	}
	switch k.name {
	case "token":
		t := c.String("token")
		return func(context.Context) (string, error) { return t, nil }
	case "token-file":
		f := c.String("token-file")
		return func(context.Context) (string, error) {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			return strings.TrimSpace(string(b)), nil
		}
	case "k8s":
		path := c.String("token-file")
		if path == "" {
			path = agent.DefaultK8sTokenPath
		}
		return func(context.Context) (string, error) { return agent.K8sToken(path) }
	case "aws-iid":
		return func(ctx context.Context) (string, error) { return agent.AWSIdentity(ctx, or("")) }
	case "gcp":
		aud := c.String("audience")
		return func(ctx context.Context) (string, error) { return agent.GCPIdentityToken(ctx, or(""), aud) }
	case "azure":
		aud := c.String("audience")
		return func(ctx context.Context) (string, error) { return agent.AzureMSIToken(ctx, or(""), aud) }
	case "azure-imds":
		return func(ctx context.Context) (string, error) {
			client, err := agent.NewClient(caURL, poolOf(roots))
			if err != nil {
				return "", err
			}
			nonce, err := client.Challenge(ctx, provisioner)
			if err != nil {
				return "", err
			}
			return agent.AzureAttested(ctx, or(""), nonce)
		}
	}
	return nil
}
