package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	trustDomain = "bench.example.org"
	// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat; it
	// is 100 on every Linux architecture Go supports.
	clockTicks = 100
)

// daemon is the `agentca serve` child process.
type daemon struct {
	binary  string
	dir     string // the CA's state directory
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	https   string // https://127.0.0.1:port
	http    string // http://127.0.0.1:port, the plain listener (OCSP, CRLs)
	// k8s is the fake cluster whose service-account key the k8s-sa
	// provisioner trusts, or nil.
	k8s   *k8sCluster
	roots *x509.CertPool
	// pprofURL is the profiling build's pprof endpoint, or "".
	pprofURL string
	info     daemonInfo
}

type daemonInfo struct {
	binary     string
	serveCmd   string
	goVersion  string
	revision   string // the binary's vcs.revision, when it was built in a git checkout
	configNote string
	peakRSS    int64 // bytes
	exitCode   int
	logErrors  int
	logLines   int
	profiled   bool
	dbBytes    int64 // agentca.db at the end
	tokens     int   // join tokens created
	issued     int   // certificates issued through the API, warm-up and enrollment included
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the daemon binds it; startDaemon retries then.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startDaemon(ctx context.Context, opts options, tmp string) (*daemon, error) {
	d := &daemon{binary: opts.binary, dir: filepath.Join(tmp, "ca"), logPath: filepath.Join(tmp, "serve.log")}
	d.info.binary = opts.binary
	d.info.readBuildInfo(opts.binary)
	httpsAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	logf("agentca init --dir %s (https %s, http %s)", d.dir, httpsAddr, httpAddr)
	out, err := exec.CommandContext(ctx, d.binary, "init", "--dir", d.dir, "--trust-domain", trustDomain,
		"--https", httpsAddr, "--http", httpAddr).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("agentca init: %v: %s", err, bytes.TrimSpace(out))
	}
	rootsPEM, err := os.ReadFile(filepath.Join(d.dir, "roots.pem"))
	if err != nil {
		return nil, err
	}
	d.roots = x509.NewCertPool()
	if !d.roots.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("roots.pem holds no certificate")
	}
	if opts.k8s {
		if d.k8s, err = newK8sCluster(tmp); err != nil {
			return nil, err
		}
		if err := editConfig(filepath.Join(d.dir, "agentca.json"), d.k8s.addProvisioner); err != nil {
			return nil, err
		}
	}
	if opts.runs("token") {
		if err := configureTokens(d.dir); err != nil { // token.go
			return nil, err
		}
	}
	serveBin := d.binary
	if opts.pprofDir != "" {
		if serveBin, err = buildProfserve(ctx, tmp); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.pprofDir, 0o755); err != nil {
			return nil, err
		}
		d.info.profiled = true
	}
	if err := d.spawnRetrying(serveBin, httpsAddr, httpAddr, opts.pprofDir); err != nil {
		return nil, err
	}
	d.info.configNote = configSummary(filepath.Join(d.dir, "agentca.json"))
	return d, nil
}

// readBuildInfo fills in the Go version and the VCS revision the binary
// was built from, when it says.
func (i *daemonInfo) readBuildInfo(binary string) {
	if bi, err := buildinfo.ReadFile(binary); err == nil {
		i.goVersion = bi.GoVersion
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			i.revision = rev[:min(12, len(rev))]
			if modified == "true" {
				i.revision += " with uncommitted changes"
			}
		}
	}
}

// spawnRetrying starts `serve` on the given addresses; when a port was
// taken in the meantime, it moves both listeners to new free ports and
// tries again (three times at most).
func (d *daemon) spawnRetrying(serveBin, httpsAddr, httpAddr, pprofDir string) error {
	var env []string
	var err error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// A port was taken between freePort and the bind:
			// move both listeners, through the documented
			// listen and public_urls fields.
			if httpsAddr, err = freePort(); err != nil {
				return err
			}
			if httpAddr, err = freePort(); err != nil {
				return err
			}
			if err := editConfig(filepath.Join(d.dir, "agentca.json"), func(c map[string]any) {
				c["listen"] = map[string]any{"https": httpsAddr, "http": httpAddr}
				c["public_urls"] = map[string]any{"https": "https://" + httpsAddr, "http": "http://" + httpAddr}
			}); err != nil {
				return err
			}
			logf("port taken; retrying on https %s, http %s", httpsAddr, httpAddr)
		}
		d.https = "https://" + httpsAddr
		d.http = "http://" + httpAddr
		if pprofDir != "" {
			pp, err := freePort()
			if err != nil {
				return err
			}
			d.pprofURL = "http://" + pp
			env = []string{"AGENTCA_BENCH_PPROF=" + pp}
		}
		d.info.serveCmd = serveBin + " serve --dir " + d.dir
		err := d.spawn(serveBin, env)
		if err == nil {
			break
		}
		b, _ := os.ReadFile(d.logPath)
		if attempt < 3 && bytes.Contains(b, []byte("address already in use")) {
			continue
		}
		return err
	}
	return nil
}

func (d *daemon) spawn(bin string, env []string) error {
	logf("starting %s serve --dir %s (log: %s)", bin, d.dir, d.logPath)
	logFile, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	// Not CommandContext: the daemon is stopped with SIGTERM by stop,
	// or killed by kill on every error path.
	cmd := exec.Command(bin, "serve", "--dir", d.dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	logFile.Close()
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { d.waitErr = cmd.Wait(); close(d.exited) }()

	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: d.roots, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("agentca serve exited early (%v): %s", d.waitErr, tail(d.logPath, 5))
		default:
		}
		resp, err := hc.Get(d.https + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				logf("daemon pid %d healthy at %s", cmd.Process.Pid, d.https)
				return nil
			}
		}
		if time.Now().After(deadline) {
			d.kill()
			return fmt.Errorf("agentca serve not healthy after 20s (%v): %s", err, tail(d.logPath, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// editConfig rewrites agentca.json through a generic map, so fields this
// tool does not know survive.
func editConfig(path string, edit func(map[string]any)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	edit(c)
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o600)
}

// configSummary is the part of agentca.json that matters for the numbers.
func configSummary(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	var c struct {
		KeyType string          `json:"key_type"`
		Storage json.RawMessage `json:"storage"`
		Leaf    json.RawMessage `json:"leaf"`
		Logging json.RawMessage `json:"logging"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "?"
	}
	kt := c.KeyType
	if kt == "" {
		kt = "ec-p256"
	}
	s := fmt.Sprintf("CA key %s, storage %s, leaf %s", kt, compact(c.Storage), compact(c.Leaf))
	if len(c.Logging) > 0 {
		s += ", logging " + compact(c.Logging)
	} else {
		s += ", default logging (one audit line per issuance)"
	}
	return s
}

func compact(m json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, m) != nil {
		return string(m)
	}
	return b.String()
}

// buildProfserve builds ./cmd/agentca-bench/profserve: `agentca serve`
// with a net/http/pprof listener.
func buildProfserve(ctx context.Context, tmp string) (string, error) {
	out := filepath.Join(tmp, "agentca-profserve")
	logf("building the profiling daemon (go build ./cmd/agentca-bench/profserve)")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/agentca/agentca/cmd/agentca-bench/profserve")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building profserve (run from the repository): %v: %s", err, bytes.TrimSpace(b))
	}
	return out, nil
}

// tokenResponse is `agentca token create --json`'s output.
type tokenResponse struct {
	Tokens []struct {
		Token string `json:"token"`
	} `json:"tokens"`
}

// createTokens runs `agentca token create --count n --json` once.
func (d *daemon) createTokens(ctx context.Context, spiffeID string, n int) ([]string, error) {
	cmd := exec.CommandContext(ctx, d.binary, "token", "create", "--dir", d.dir, "--spiffe-id", spiffeID,
		"--count", strconv.Itoa(n), "--ttl", "1h", "--json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("agentca token create: %v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var resp tokenResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("agentca token create --json: %w", err)
	}
	if len(resp.Tokens) != n {
		return nil, fmt.Errorf("agentca token create --count %d printed %d tokens", n, len(resp.Tokens))
	}
	toks := make([]string, n)
	for i, t := range resp.Tokens {
		toks[i] = t.Token
	}
	return toks, nil
}

// cpuSeconds is the daemon's user+system CPU time so far.
func (d *daemon) cpuSeconds() float64 { return procCPU(d.cmd.Process.Pid) }

// procCPU reads utime+stime from /proc/PID/stat, in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: split after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// machineCPU returns the CPU time of the whole machine so far, from the
// first line of /proc/stat, in seconds: busy (user, nice, system, irq,
// softirq, steal) and idle (idle, iowait).
func machineCPU() (busy, idle float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		switch {
		case i == 3 || i == 4:
			idle += n
		case i < 8: // guest and guest_nice are already in user and nice
			busy += n
		}
	}
	return busy / clockTicks, idle / clockTicks
}

// peakRSS reads VmHWM (the resident set's high-water mark) in bytes.
func (d *daemon) peakRSS() int64 {
	n, _ := procStatusKB(d.cmd.Process.Pid, "VmHWM")
	return n
}

// stop sends SIGTERM and waits for the exit status.
func (d *daemon) stop(timeout time.Duration) (int, error) {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.kill()
		return -1, fmt.Errorf("daemon did not exit within %s of SIGTERM; killed", timeout)
	}
	if d.waitErr == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(d.waitErr, &ee) {
		return ee.ExitCode(), nil
	}
	return -1, d.waitErr
}

// kill ends the daemon this tool started (by its pid) if it still runs.
func (d *daemon) kill() {
	if d.cmd == nil || d.cmd.Process == nil || d.exited == nil {
		return
	}
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// logSummary counts the daemon's log lines and its ERROR lines.
func (d *daemon) logSummary() (errs, lines int) {
	f, err := os.Open(d.logPath)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines++
		if strings.Contains(sc.Text(), "level=ERROR") || strings.Contains(sc.Text(), `"level":"ERROR"`) {
			errs++
		}
	}
	return errs, lines
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// certPEMBlocks decodes the CERTIFICATE blocks in p.
func certPEMBlocks(p []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, p = pem.Decode(p)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return out, nil
}
