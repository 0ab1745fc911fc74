package main

// The big-store phase: a state directory holding many certificates (one
// million by default), each with its issuance-log entry, written straight
// into the bbolt file; then the daemon is started on it and we measure
// how long it takes to answer, its memory, and a few requests at that
// size (issue 8: "1,000,000 certificates in the store: daemon RSS ≤ 300
// MB, start-up ≤ 2 s, no full scan at start").

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cadaemon "github.com/agentca/agentca/internal/daemon"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
	"go.step.sm/crypto/pemutil"
)

// bigStoreResult is what the phase measured.
type bigStoreResult struct {
	Certificates int
	FillTime     time.Duration
	FileBytes    int64
	// StartUp is from exec to the first 200 on /health over HTTPS.
	StartUp time.Duration
	// RSSReady and RSSAfter are VmRSS right after start-up and after the
	// probe requests; HWM is VmHWM at the end.
	RSSReady, RSSAfter, HWM int64
	// ProofP50/P99 are GET /ct/v1/get-proof-by-hash latencies at this
	// log size, one request at a time, right after start-up (the page
	// cache dropped when we may: the nodes are read from disk), and
	// WarmP50/P99 the same requests again.
	ProofP50, ProofP99 time.Duration
	WarmP50, WarmP99   time.Duration
	Proofs             int
}

// fillStore writes n certificates (synthetic DER, unique; unexpired for an
// hour) with their log entries into the bbolt file of the CA in dir, through
// store.Issue with many writers so that commits are large.
func fillStore(ctx context.Context, dir string, n int, issuerSKI string) (time.Duration, [][]byte, error) {
	st, err := bolt.Open(filepath.Join(dir, "agentca.db"), bolt.Options{MaxBatch: 4096})
	if err != nil {
		return 0, nil, err
	}
	defer st.Close()
	const writers = 512
	start := time.Now()
	var next atomic.Int64
	var mu sync.Mutex
	var sample [][]byte // leaf hashes for the proof probes
	errc := make(chan error, writers)
	var wg sync.WaitGroup
	now := time.Now().Truncate(time.Second)
	for range writers {
		wg.Go(func() {
			der := make([]byte, 560)
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				if _, err := rand.Read(der); err != nil {
					errc <- err
					return
				}
				serial := make([]byte, 16)
				copy(serial, der)
				serial[0] &= 0x7f
				serial[0] |= 0x01
				leaf, err := translog.NewLeaf(append([]byte(nil), der...), uint64(now.UnixMilli()))
				if err != nil {
					errc <- err
					return
				}
				c := store.Certificate{
					Serial: hex.EncodeToString(serial), SPIFFEID: "spiffe://example.org/bench/big/" + strconv.FormatInt(i%10000, 10),
					Provisioner: "join", IssuerSKI: issuerSKI, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
					DER: leaf.Certificate(),
				}
				if err := st.Issue(ctx, &store.Issuance{Certificate: c, Now: now, LogLeaf: leaf}); err != nil {
					errc <- fmt.Errorf("certificate %d: %w", i, err)
					return
				}
				if i%(int64(n)/1000+1) == 0 {
					mu.Lock()
					sample = append(sample, leaf.Hash)
					mu.Unlock()
				}
				if i%100000 == 0 {
					logf("big-store: %d certificates written (%s)", i, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, nil, err
	}
	return time.Since(start), sample, ctx.Err()
}

// runBigStore initialises a CA in a temporary directory, fills its store
// with n certificates, starts binary on it and measures.
func runBigStore(ctx context.Context, binary string, n int, keep bool) (*bigStoreResult, error) {
	base, err := os.MkdirTemp("", "agentca-bigstore-*")
	if err != nil {
		return nil, err
	}
	if !keep {
		defer os.RemoveAll(base)
	} else {
		logf("big-store: keeping %s", base)
	}
	dir := filepath.Join(base, "ca")
	httpsAddr, httpAddr, err := twoFreePorts()
	if err != nil {
		return nil, err
	}
	if _, err := cadaemon.Init(ctx, cadaemon.InitOptions{Dir: dir, TrustDomain: "example.org", HTTPS: httpsAddr, HTTP: httpAddr}); err != nil {
		return nil, err
	}
	iss, err := pemutil.ReadCertificate(filepath.Join(dir, cadaemon.IssuingCert))
	if err != nil {
		return nil, err
	}
	res := &bigStoreResult{Certificates: n}
	logf("big-store: writing %d certificates with their log entries", n)
	var sample [][]byte
	if res.FillTime, sample, err = fillStore(ctx, dir, n, hex.EncodeToString(iss.SubjectKeyId)); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filepath.Join(dir, "agentca.db")); err == nil {
		res.FileBytes = fi.Size()
	}
	// Drop the file from the page cache as far as we can, so the
	// start-up reads it as a restarted machine would (best effort: it
	// needs root; without it the measured start-up is with a warm cache).
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200)

	roots, err := pemutil.ReadCertificateBundle(filepath.Join(dir, cadaemon.RootsFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	cmd := exec.CommandContext(ctx, binary, "serve", "--dir", dir)
	logPath := filepath.Join(base, "serve.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	if err := waitHealthy(hc, httpsAddr, start, logPath); err != nil {
		return nil, err
	}
	res.StartUp = time.Since(start)
	res.RSSReady, _ = procStatusKB(cmd.Process.Pid, "VmRSS")

	// Inclusion proofs at this size, through the CT API.
	sth := struct {
		TreeSize uint64 `json:"tree_size"`
	}{}
	for time.Since(start) < 30*time.Second {
		if err := getJSON(ctx, "http://"+httpAddr+"/ct/v1/get-sth", &sth); err == nil && sth.TreeSize >= uint64(n) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cold, err := proofLatencies(ctx, httpAddr, sample, sth.TreeSize)
	if err != nil {
		return nil, err
	}
	warm, err := proofLatencies(ctx, httpAddr, sample, sth.TreeSize)
	if err != nil {
		return nil, err
	}
	res.Proofs = len(cold)
	res.ProofP50, res.ProofP99 = cold[len(cold)/2], cold[len(cold)*99/100]
	res.WarmP50, res.WarmP99 = warm[len(warm)/2], warm[len(warm)*99/100]
	res.RSSAfter, _ = procStatusKB(cmd.Process.Pid, "VmRSS")
	res.HWM, _ = procStatusKB(cmd.Process.Pid, "VmHWM")
	return res, nil
}

// waitHealthy polls the daemon's /health until it answers 200, for two
// minutes at most from start.
func waitHealthy(hc *http.Client, httpsAddr string, start time.Time, logPath string) error {
	for {
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("big-store: the daemon did not answer /health within 2 minutes (see %s)", logPath)
		}
		resp, err := hc.Get("https://" + httpsAddr + "/health")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// proofLatencies asks the CT API for an inclusion proof of each sampled
// leaf hash at treeSize, and returns the latencies in increasing order.
func proofLatencies(ctx context.Context, httpAddr string, sample [][]byte, treeSize uint64) ([]time.Duration, error) {
	var lat []time.Duration
	for _, h := range sample {
		u := fmt.Sprintf("http://%s/ct/v1/get-proof-by-hash?hash=%s&tree_size=%d", httpAddr, urlB64(h), treeSize)
		t0 := time.Now()
		var out map[string]any
		if err := getJSON(ctx, u, &out); err != nil {
			return nil, fmt.Errorf("big-store: inclusion proof: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return nil, errors.New("big-store: no entry to prove")
	}
	return lat, nil
}

func twoFreePorts() (string, string, error) {
	a, err := freePort()
	if err != nil {
		return "", "", err
	}
	b, err := freePort()
	return a, b, err
}

func urlB64(b []byte) string {
	return strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(base64.StdEncoding.EncodeToString(b))
}

func getJSON(ctx context.Context, u string, out any) error {
	b, err := httpGet(ctx, u)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// procStatusKB reads a "kB" field of /proc/PID/status, in bytes.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
