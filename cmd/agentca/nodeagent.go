package main

import (
	"crypto/x509"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/nodeagent"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/urfave/cli/v2"
)

func nodeAgentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "node agent: attest the node once, keep its certificate in --data-dir, serve the SPIFFE Workload API on --socket",
		Flags: append(attestationFlags(),
			&cli.StringFlag{Name: "data-dir", Usage: "directory for the node's cert.pem, key.pem and bundle.pem (a restart resumes from them)", EnvVars: []string{"AGENTCA_DATA_DIR"}},
			&cli.StringFlag{Name: "socket", Usage: "the Workload API's unix socket (give it to workloads as SPIFFE_ENDPOINT_SOCKET=unix://PATH)", EnvVars: []string{"AGENTCA_SOCKET"}},
			&cli.StringFlag{Name: "key-type", Usage: "key type of the node's and the workloads' keys: ec-p256, ec-p384, ed25519 or rsa-2048", Value: "ec-p256", EnvVars: []string{"AGENTCA_KEY_TYPE"}},
			&cli.DurationFlag{Name: "ttl", Usage: "the node certificate's lifetime to ask for", DefaultText: "the CA's", EnvVars: []string{"AGENTCA_TTL"}},
			&cli.StringFlag{Name: "kubelet", Usage: "the kubelet's HTTPS URL (e.g. https://127.0.0.1:10250): add the callers' pods' k8s: selectors", EnvVars: []string{"AGENTCA_KUBELET"}},
			&cli.StringFlag{Name: "kubelet-token-file", Usage: "bearer token for the kubelet (re-read at each request)", EnvVars: []string{"AGENTCA_KUBELET_TOKEN_FILE"}},
			&cli.StringFlag{Name: "kubelet-ca-file", Usage: "PEM roots to verify the kubelet's certificate (default: the system's)", EnvVars: []string{"AGENTCA_KUBELET_CA_FILE"}},
			&cli.DurationFlag{Name: "poll-interval", Usage: "how often to fetch the workload definitions and check the bundle", Value: 2 * time.Second, EnvVars: []string{"AGENTCA_POLL_INTERVAL"}},
			federatesWithFlag(),
		),
		Action: nodeAgent,
	}
}

func nodeAgent(c *cli.Context) error {
	caURL, dir, sock := c.String("ca"), c.String("data-dir"), c.String("socket")
	if caURL == "" || dir == "" || sock == "" {
		return usagef("--ca, --data-dir and --socket are required")
	}
	if (c.String("root") == "") == (c.String("fingerprint") == "") {
		return usagef("give exactly one of --root FILE or --fingerprint SHA256")
	}
	kind, err := attestationKind(c)
	if err != nil {
		return err
	}
	if _, err := agent.NewKey(c.String("key-type")); err != nil {
		return usagef("--key-type: %v", err)
	}
	if p := c.Duration("poll-interval"); p < 100*time.Millisecond || p > time.Minute {
		return usagef("--poll-interval must be between 100ms and 1m")
	}
	federated, err := federatesWith(c)
	if err != nil {
		return err
	}
	kubelet, err := kubeletFromFlags(c)
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
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg := agent.Config{CAURL: caURL, Roots: roots, Provisioner: provisioner, Attest: kind.attest(c, caURL, roots, provisioner),
		KeyType: c.String("key-type"), TTL: c.Duration("ttl"), Dir: dir, FederatesWith: federated}
	resume(c, &cfg, kind, roots, log)
	cfg.Logger = log
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	src, err := agent.NewSource(ctx, cfg)
	if err != nil {
		return err
	}
	defer src.Close()
	node, err := spiffeid.FromString(src.Current().SPIFFEID)
	if err != nil {
		return err
	}
	ca, err := agent.NewNodeClient(caURL, src.Pool, src.GetClientCertificate)
	if err != nil {
		return err
	}
	na, err := nodeagent.New(nodeagent.Config{CA: ca, JWT: ca, Roots: src.Roots, TrustDomain: node.TrustDomain(), Federated: src.FederatedBundles,
		KeyType: c.String("key-type"), Poll: c.Duration("poll-interval"), Kubelet: kubelet, Logger: log})
	if err != nil {
		return err
	}
	if err := na.Refresh(ctx); err != nil {
		log.Warn("fetching workload definitions failed; retrying", "err", err)
	}
	lis, err := nodeagent.Listen(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	srv := na.NewServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	go na.Run(ctx)
	log.Info("node agent running", "spiffe_id", node.String(), "serial", src.Current().Serial, "socket", sock, "dir", dir)
	select {
	case <-ctx.Done():
		log.Info("stopping on signal")
		srv.Stop()
		return nil
	case <-src.Done():
		srv.Stop()
		return src.Err()
	case err := <-served:
		if err != nil {
			return errors.New("serving the Workload API: " + err.Error())
		}
		return nil
	}
}

// kubeletFromFlags returns the kubelet client --kubelet asks for, or nil.
func kubeletFromFlags(c *cli.Context) (*nodeagent.Kubelet, error) {
	u := c.String("kubelet")
	if u == "" {
		if c.String("kubelet-token-file") != "" || c.String("kubelet-ca-file") != "" {
			return nil, usagef("--kubelet-token-file and --kubelet-ca-file need --kubelet")
		}
		return nil, nil
	}
	if c.String("kubelet-token-file") == "" {
		return nil, usagef("--kubelet needs --kubelet-token-file")
	}
	cfg := nodeagent.KubeletConfig{URL: u, TokenFile: c.String("kubelet-token-file")}
	if f := c.String("kubelet-ca-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		cfg.Roots = x509.NewCertPool()
		if !cfg.Roots.AppendCertsFromPEM(b) {
			return nil, usagef("--kubelet-ca-file %s holds no PEM certificate", f)
		}
	}
	k, err := nodeagent.NewKubelet(cfg)
	if err != nil {
		return nil, usagef("--kubelet: %v", err)
	}
	return k, nil
}
