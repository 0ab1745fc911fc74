package main

// agentca log: audit the issuance log with the CT v1 API (sth, verify,
// prove) or offline from the state directory (audit).

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/internal/fsutil"
	"github.com/agentca/agentca/store/logaudit"
	"github.com/agentca/agentca/translog"
	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/client"
	"github.com/google/certificate-transparency-go/jsonclient"
	"github.com/urfave/cli/v2"
)

func logCommand() *cli.Command {
	caURL := func() cli.Flag {
		return &cli.StringFlag{Name: "ca", Usage: "the CA's plain HTTP listener (public_urls.http), where the CT API is served, e.g. http://127.0.0.1:8080", EnvVars: []string{"AGENTCA_CA_HTTP"}}
	}
	logKey := func() cli.Flag {
		return &cli.StringFlag{Name: "log-key", Usage: "PEM file with the log's public key (D/log.pub.pem); default: fetched from the CA's /v1/log-key, trusted on first use", EnvVars: []string{"AGENTCA_LOG_KEY"}}
	}
	return &cli.Command{
		Name:  "log",
		Usage: "audit the issuance log: signed tree heads, consistency, inclusion, and an offline audit of the state directory",
		Subcommands: []*cli.Command{
			{
				Name:  "sth",
				Usage: "fetch the latest signed tree head and verify its signature",
				Flags: []cli.Flag{caURL(), logKey(), &cli.BoolFlag{Name: "json", Usage: "print the get-sth JSON"}},
				Action: func(c *cli.Context) error {
					lc, err := newLogConn(c)
					if err != nil {
						return err
					}
					sth, raw, err := lc.sth(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return json.NewEncoder(c.App.Writer).Encode(raw)
					}
					printSTH(c.App.Writer, sth, lc)
					return nil
				},
			},
			{
				Name:  "verify",
				Usage: "check that the latest signed tree head extends the one saved in --state (a fork or a rewritten history exits 1), then save it",
				Flags: []cli.Flag{caURL(), logKey(),
					&cli.StringFlag{Name: "state", Usage: "file keeping the last verified tree head (created on first use)", EnvVars: []string{"AGENTCA_LOG_STATE"}}},
				Action: func(c *cli.Context) error {
					if c.String("state") == "" {
						return usagef("--state is required")
					}
					return logVerify(c)
				},
			},
			{
				Name:  "prove",
				Usage: "prove that a certificate is in the log: find its entry and verify the inclusion proof against the latest signed tree head",
				Flags: []cli.Flag{caURL(), logKey(),
					&cli.StringFlag{Name: "cert", Usage: "PEM file whose first certificate is the one to prove (cert.pem)", EnvVars: []string{"AGENTCA_CERT"}},
					&cli.Int64Flag{Name: "timestamp", Usage: "the entry's timestamp in ms (the SignResponse's log.timestamp)", DefaultText: "the certificate's issuance time, NotBefore plus one minute", EnvVars: []string{"AGENTCA_LOG_TIMESTAMP"}},
					&cli.Uint64Flag{Name: "search", Usage: "when the timestamps do not find it, search at most this many entries (oldest first: where an upgraded state directory's certificates are) for the certificate; 0 searches none", Value: 100_000, EnvVars: []string{"AGENTCA_LOG_SEARCH"}}},
				Action: func(c *cli.Context) error {
					if c.String("cert") == "" {
						return usagef("--cert is required")
					}
					return logProve(c)
				},
			},
			{
				Name:  "audit",
				Usage: "offline (daemon stopped): recompute the tree from the stored entries and compare it with the stored tree, the last signed tree head and the certificate table; any divergence exits 1",
				Flags: []cli.Flag{dirFlag(),
					&cli.StringFlag{Name: "log-key", Usage: "PEM file with the log's public key (default: D/log.pub.pem)", EnvVars: []string{"AGENTCA_LOG_KEY"}}},
				Action: logAudit,
			},
		},
	}
}

// logConn is a CT client for the CA's log and the log's key.
type logConn struct {
	base   string
	client *client.LogClient
	key    crypto.PublicKey
	keySrc string
	logID  [32]byte
}

func newLogConn(c *cli.Context) (*logConn, error) {
	base := strings.TrimSuffix(c.String("ca"), "/")
	if base == "" {
		return nil, usagef("--ca is required (the CA's HTTP listener, e.g. http://127.0.0.1:8080)")
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usagef("--ca %q is not an http:// URL", base)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	lc := &logConn{base: base}
	if f := c.String("log-key"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if lc.key, err = parsePublicKey(b); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		lc.keySrc = f
	} else {
		b, err := httpGet(c.Context, hc, base+"/v1/log-key")
		if err != nil {
			return nil, fmt.Errorf("fetching the log key: %w", err)
		}
		if lc.key, err = parsePublicKey(b); err != nil {
			return nil, fmt.Errorf("the CA's /v1/log-key: %w", err)
		}
		lc.keySrc = base + "/v1/log-key"
	}
	if lc.logID, err = translog.LogID(lc.key); err != nil {
		return nil, err
	}
	if lc.client, err = client.New(base, hc, jsonclient.Options{}); err != nil {
		return nil, err
	}
	return lc, nil
}

func parsePublicKey(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	return x509.ParsePKIXPublicKey(block.Bytes)
}

func httpGet(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return b, nil
}

// sth fetches the latest tree head and verifies it with the log key.
func (lc *logConn) sth(ctx context.Context) (*ct.SignedTreeHead, *ct.GetSTHResponse, error) {
	sth, err := lc.client.GetSTH(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("get-sth: %w", err)
	}
	if err := translog.VerifySTH(lc.key, sth); err != nil {
		return nil, nil, fmt.Errorf("the log's tree head does not verify with the key from %s: %w", lc.keySrc, err)
	}
	raw, err := translog.STHResponse(sth)
	if err != nil {
		return nil, nil, err
	}
	return sth, raw, nil
}

func printSTH(w io.Writer, sth *ct.SignedTreeHead, lc *logConn) {
	fmt.Fprintf(w, "tree_size  %d\n", sth.TreeSize)
	fmt.Fprintf(w, "timestamp  %d (%s)\n", sth.Timestamp, ct.TimestampToTime(sth.Timestamp).UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(w, "root_hash  %s\n", base64.StdEncoding.EncodeToString(sth.SHA256RootHash[:]))
	fmt.Fprintf(w, "log_id     %s\n", hex.EncodeToString(lc.logID[:]))
	fmt.Fprintf(w, "signature  verified with the key from %s\n", lc.keySrc)
}

// logState is the file `log verify --state` keeps.
type logState struct {
	LogID string             `json:"log_id"`
	STH   *ct.GetSTHResponse `json:"sth"`
}

func logVerify(c *cli.Context) error {
	lc, err := newLogConn(c)
	if err != nil {
		return err
	}
	path := c.String("state")
	var prev *ct.SignedTreeHead
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		var s logState
		if err := json.Unmarshal(b, &s); err != nil || s.STH == nil {
			return fmt.Errorf("%s is not a log state file: %v", path, err)
		}
		if s.LogID != hex.EncodeToString(lc.logID[:]) {
			return fmt.Errorf("%s was saved for log %s, but the log key is now %x", path, s.LogID, lc.logID[:])
		}
		if prev, err = s.STH.ToSignedTreeHead(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := translog.VerifySTH(lc.key, prev); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	cur, raw, err := lc.sth(c.Context)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if prev != nil {
		if err := consistent(c.Context, lc, prev, cur); err != nil {
			return fmt.Errorf("the log is NOT consistent with the tree head saved in %s (a forked or rewritten log): %w", path, err)
		}
		fmt.Fprintf(w, "consistent: the tree of size %d extends the saved tree of size %d\n", cur.TreeSize, prev.TreeSize)
	} else {
		fmt.Fprintf(w, "first tree head saved (nothing to compare with yet)\n")
	}
	out, err := json.MarshalIndent(logState{LogID: hex.EncodeToString(lc.logID[:]), STH: raw}, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return err
	}
	printSTH(w, cur, lc)
	return nil
}

// consistent checks that cur extends prev with the log's consistency
// proof.
func consistent(ctx context.Context, lc *logConn, prev, cur *ct.SignedTreeHead) error {
	switch {
	case cur.TreeSize < prev.TreeSize:
		return fmt.Errorf("the log now has %d entries, fewer than the %d of the saved tree head", cur.TreeSize, prev.TreeSize)
	case cur.TreeSize == prev.TreeSize:
		if cur.SHA256RootHash != prev.SHA256RootHash {
			return fmt.Errorf("two tree heads of size %d with different roots (%x, %x)", cur.TreeSize, prev.SHA256RootHash[:], cur.SHA256RootHash[:])
		}
		return nil
	case prev.TreeSize == 0:
		return nil
	}
	p, err := lc.client.GetSTHConsistency(ctx, prev.TreeSize, cur.TreeSize)
	if err != nil {
		return fmt.Errorf("get-sth-consistency: %w", err)
	}
	return translog.VerifyConsistency(prev.TreeSize, cur.TreeSize, p, prev.SHA256RootHash[:], cur.SHA256RootHash[:])
}

func logProve(c *cli.Context) error {
	lc, err := newLogConn(c)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(c.String("cert"))
	if err != nil {
		return err
	}
	certs, err := agent.ParseCertificates(b)
	if err != nil {
		return fmt.Errorf("%s: %w", c.String("cert"), err)
	}
	cert := certs[0]
	sth, _, err := lc.sth(c.Context)
	if err != nil {
		return err
	}
	// The leaf hash covers the timestamp, so the entry is found from the
	// certificate and its timestamp: the one given, else the issuance
	// time agentca uses (NotBefore plus the one-minute backdate), else
	// NotBefore; failing those, the entries are searched.
	var tss []uint64
	if ts := c.Int64("timestamp"); ts > 0 {
		tss = []uint64{uint64(ts)}
	} else {
		tss = []uint64{uint64(cert.NotBefore.Add(time.Minute).UnixMilli()), uint64(cert.NotBefore.UnixMilli())}
	}
	var leaf *translog.Leaf
	var resp *ct.GetProofByHashResponse
	for _, ts := range tss {
		l, err := translog.NewLeaf(cert.Raw, ts)
		if err != nil {
			return err
		}
		resp, err = lc.client.GetProofByHash(c.Context, l.Hash, sth.TreeSize)
		var re jsonclient.RspError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			continue
		}
		if err != nil {
			return fmt.Errorf("get-proof-by-hash: %w", err)
		}
		leaf = l
		break
	}
	if leaf == nil && c.Int64("timestamp") == 0 && c.Uint64("search") > 0 {
		if leaf, err = scanEntries(c.Context, lc, cert, min(sth.TreeSize, c.Uint64("search"))); err != nil {
			return err
		}
		if leaf != nil {
			if resp, err = lc.client.GetProofByHash(c.Context, leaf.Hash, sth.TreeSize); err != nil {
				return fmt.Errorf("get-proof-by-hash: %w", err)
			}
		}
	}
	if leaf == nil {
		return fmt.Errorf("certificate %x is not in the log's tree of size %d", cert.SerialNumber, sth.TreeSize)
	}
	if resp.LeafIndex < 0 {
		return fmt.Errorf("get-proof-by-hash: negative leaf index %d", resp.LeafIndex)
	}
	index := uint64(resp.LeafIndex)
	if err := translog.VerifyInclusion(leaf.Hash, index, sth.TreeSize, resp.AuditPath, sth.SHA256RootHash[:]); err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "certificate %x is log entry %d (timestamp %d, %s)\n", cert.SerialNumber, index, leaf.Timestamp(),
		ct.TimestampToTime(leaf.Timestamp()).UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "included in the tree of size %d (root %s) signed at %s: audit path of %d hashes verified\n", sth.TreeSize,
		base64.StdEncoding.EncodeToString(sth.SHA256RootHash[:]), ct.TimestampToTime(sth.Timestamp).UTC().Format(time.RFC3339Nano), len(resp.AuditPath))
	return nil
}

// scanEntries looks for cert among the first n entries of the log (for a
// certificate whose timestamp is not its issuance time: one logged when an
// older state directory was upgraded, at the start of the log).
func scanEntries(ctx context.Context, lc *logConn, cert *x509.Certificate, n uint64) (*translog.Leaf, error) {
	for start := uint64(0); start < n; {
		resp, err := lc.client.GetRawEntries(ctx, int64(start), int64(n-1))
		if err != nil {
			return nil, fmt.Errorf("get-entries: %w", err)
		}
		if len(resp.Entries) == 0 {
			return nil, fmt.Errorf("get-entries returned no entry from %d", start)
		}
		for _, e := range resp.Entries {
			l, err := translog.ParseLeaf(e.LeafInput)
			if err == nil && string(l.Certificate()) == string(cert.Raw) {
				return l, nil
			}
		}
		start += uint64(len(resp.Entries))
	}
	return nil, nil
}

func logAudit(c *cli.Context) error {
	dir, err := filepath.Abs(c.String("dir"))
	if err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(dir, config.FileName))
	if err != nil {
		return err
	}
	keyPath := c.String("log-key")
	if keyPath == "" {
		keyPath = filepath.Join(dir, daemon.LogPubFile)
	}
	key, err := daemon.ReadPublicKey(keyPath)
	if err != nil {
		return err
	}
	// bbolt: read-only, the daemon stopped (its lock is an error). etcd:
	// a live audit beside the running replicas.
	st, err := daemon.OpenStore(c.Context, dir, cfg.Storage)
	if err != nil {
		return err
	}
	defer st.Close()
	// Records of certificates expired past the retention may have been
	// swept; their entries stay in the log.
	rep, err := logaudit.RunWithOptions(c.Context, st, st, logaudit.Options{LogKey: key,
		SweptBefore: time.Now().Add(-cfg.Storage.RetentionOrDefault()), Live: cfg.Storage.Type == "etcd"})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "log entries        %d\n", rep.Entries)
	fmt.Fprintf(w, "certificates       %d\n", rep.Certificates)
	if rep.Swept > 0 {
		fmt.Fprintf(w, "swept records      %d (expired more than %s ago; their entries stay in the log)\n", rep.Swept, cfg.Storage.RetentionOrDefault())
	}
	fmt.Fprintf(w, "recomputed root    %x\n", rep.Root)
	if rep.TreeHead != nil {
		fmt.Fprintf(w, "signed tree head   size %d, root %x, signed at %s\n", rep.TreeHead.TreeSize,
			rep.TreeHead.SHA256RootHash[:], ct.TimestampToTime(rep.TreeHead.Timestamp).UTC().Format(time.RFC3339Nano))
	}
	if len(rep.Findings) == 0 {
		fmt.Fprintln(w, "OK: the entries, the stored tree, the signed tree head and the certificate table agree")
		return nil
	}
	fmt.Fprintf(w, "DIVERGENCES (%d):\n", len(rep.Findings))
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "  %s\n", f)
	}
	return fmt.Errorf("the log audit found %d divergence(s); first: %s", len(rep.Findings), rep.Findings[0])
}
