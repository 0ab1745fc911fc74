package main

// The etcd mode (--storage etcd): a 3-member etcd cluster started in this
// process on loopback (store/etcd/etcdtest, fsync on), one CA made with
// `agentca init --storage etcd`, two `agentca serve` replicas sharing it
// (the second a copy of the first's state directory), and POST /v1/sign
// spread round robin over both, as a TCP balancer would, at each
// --concurrency for --duration. The report is its own section between
// the agentca-bench-etcd markers.

import (
	"bytes"
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentca/agentca/store/etcd/etcdtest"
)

const (
	etcdMarkBegin = "<!-- agentca-bench-etcd:begin -->"
	etcdMarkEnd   = "<!-- agentca-bench-etcd:end -->"
	etcdMembers   = 3
)

// etcdRun is what the etcd mode measured.
type etcdRun struct {
	phases []*phase
	// stores are the replicas' etcd store counts over each phase.
	stores    []storeCounts
	replicaOK []int64
	cpus      int
	load      string // /proc/loadavg before the run
	revision  string
	noFsync   bool
}

func (r *etcdRun) fsync() string {
	if r.noFsync {
		return "fsync off (AGENTCA_BENCH_ETCD_NOFSYNC)"
	}
	return "fsync on"
}

func runEtcd(ctx context.Context, opts options) error {
	tmp, err := os.MkdirTemp("", "agentca-bench-etcd-")
	if err != nil {
		return err
	}
	if opts.keep {
		logf("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	loadavg, _ := os.ReadFile("/proc/loadavg")
	run := &etcdRun{cpus: runtime.NumCPU(), load: strings.TrimSpace(string(loadavg))}
	// AGENTCA_BENCH_ETCD_NOFSYNC=1 turns fsync off in the members, to
	// separate the disk's cost from the CPU's.
	run.noFsync = os.Getenv("AGENTCA_BENCH_ETCD_NOFSYNC") != ""
	logf("starting a %d-member etcd cluster in this process (loopback, %s, --max-txn-ops 1024)", etcdMembers, run.fsync())
	cluster, err := etcdtest.Start(filepath.Join(tmp, "etcd"), etcdMembers, etcdtest.Options{MaxTxnOps: 1024, NoFsync: run.noFsync})
	if err != nil {
		return err
	}
	defer cluster.Close()

	daemons := make([]*daemon, opts.replicas)
	run.replicaOK = make([]int64, opts.replicas)
	defer func() {
		for _, d := range daemons {
			if d != nil {
				d.kill()
			}
		}
	}()
	serveBin := opts.binary
	if opts.pprofDir != "" {
		if serveBin, err = buildProfserve(ctx, tmp); err != nil {
			return err
		}
		if err := os.MkdirAll(opts.pprofDir, 0o755); err != nil {
			return err
		}
	}
	for i := range daemons {
		d, err := startEtcdReplica(ctx, opts, i, tmp, serveBin, cluster.Endpoints(), daemons[0])
		if err != nil {
			return err
		}
		daemons[i] = d
	}
	if rev := binaryRevision(opts.binary); rev != "" {
		run.revision = rev
	}

	l, err := newLoad(ctx, daemons[0], opts)
	if err != nil {
		return err
	}
	for _, c := range opts.concurrency {
		// Enough tokens for the phase at a generous rate.
		if err := l.ensureTokens(ctx, 5000*int(opts.duration.Seconds())+c); err != nil {
			return err
		}
		ph := &phase{name: fmt.Sprintf("sign-etcd c=%d", c), kind: "sign", concurrency: c}
		tokens := l.takeTokens(len(l.tokens) - l.next)
		before := scrapeStores(ctx, daemons)
		used := etcdSignLoad(ctx, l, daemons, ph, c, opts.duration, tokens, run, opts.pprofDir)
		run.stores = append(run.stores, scrapeStores(ctx, daemons).minus(before))
		l.next -= len(tokens) - used
		logf("%s: %d issued in %s = %.0f/s, %d errors, p50 %s p99 %s", ph.name, ph.ok, ph.elapsed.Round(time.Millisecond),
			ph.rate(), ph.errors, ph.pct(0.5).Round(10*time.Microsecond), ph.pct(0.99).Round(10*time.Microsecond))
		run.phases = append(run.phases, ph)
	}
	for _, d := range daemons {
		if code, err := d.stop(30 * time.Second); err != nil || code != 0 {
			return fmt.Errorf("daemon %s: exit %d, %v: %s", d.dir, code, err, tail(d.logPath, 5))
		}
	}
	md := run.markdown(opts)
	fmt.Println()
	fmt.Print(md)
	if opts.write != "" {
		if err := writeSection(opts.write, etcdMarkBegin, etcdMarkEnd, md); err != nil {
			return err
		}
		logf("report written to %s", opts.write)
	}
	return nil
}

// startEtcdReplica starts replica i of the CA: the first (i == 0) is made
// with `agentca init --storage etcd` against the cluster's endpoints, the
// others are copies of the first's state directory on their own ports.
func startEtcdReplica(ctx context.Context, opts options, i int, tmp, serveBin string, endpoints []string, first *daemon) (*daemon, error) {
	d := &daemon{binary: opts.binary, dir: filepath.Join(tmp, fmt.Sprintf("ca%d", i)), logPath: filepath.Join(tmp, fmt.Sprintf("serve%d.log", i))}
	httpsAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	if i == 0 {
		logf("agentca init --storage etcd --dir %s", d.dir)
		out, err := exec.CommandContext(ctx, d.binary, "init", "--dir", d.dir, "--trust-domain", trustDomain, "--https", httpsAddr,
			"--http", httpAddr, "--storage", "etcd", "--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-prefix", "/bench").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("agentca init: %v: %s", err, bytes.TrimSpace(out))
		}
		if err := editConfig(filepath.Join(d.dir, "agentca.json"), func(c map[string]any) {
			c["storage"].(map[string]any)["max_txn_ops"] = 1024
		}); err != nil {
			return nil, err
		}
	} else {
		if err := copyDir(first.dir, d.dir); err != nil {
			return nil, err
		}
		if err := editConfig(filepath.Join(d.dir, "agentca.json"), func(c map[string]any) {
			c["listen"] = map[string]any{"https": httpsAddr, "http": httpAddr}
			c["public_urls"] = map[string]any{"https": "https://" + httpsAddr, "http": "http://" + httpAddr}
		}); err != nil {
			return nil, err
		}
	}
	rootsPEM, err := os.ReadFile(filepath.Join(d.dir, "roots.pem"))
	if err != nil {
		return nil, err
	}
	d.roots = x509.NewCertPool()
	if !d.roots.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("roots.pem holds no certificate")
	}
	d.https, d.http = "https://"+httpsAddr, "http://"+httpAddr
	var env []string
	if opts.pprofDir != "" {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		d.pprofURL = "http://" + pp
		env = []string{"AGENTCA_BENCH_PPROF=" + pp}
	}
	if err := d.spawn(serveBin, env); err != nil {
		return nil, err
	}
	return d, nil
}

// etcdSignLoad is signLoad spread over several daemons: worker w sends
// its requests to daemon w mod n, on its own keep-alive connection.
func etcdSignLoad(ctx context.Context, l *load, daemons []*daemon, ph *phase, c int, dur time.Duration, tokens []string, run *etcdRun, pprofDir string) int {
	clients := make([]*http.Client, len(daemons))
	for i, d := range daemons {
		lc := *l
		lc.d = d
		tr := lc.newTransport(c, nil)
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		warmConns(ctx, clients[i], d.https, c/len(daemons)+1)
	}
	var next atomic.Int64
	perReplica := make([]atomic.Int64, len(daemons))
	runtime.GC()
	results := make([]result, c)
	cpu0 := 0.0
	for _, d := range daemons {
		cpu0 += d.cpuSeconds()
	}
	// With --pprof: a CPU profile of each replica, and of this process
	// (the etcd members and the load generator).
	var profs []*profile
	for i, d := range daemons {
		if p := startProfile(ctx, d.pprofURL, pprofDir, fmt.Sprintf("%s replica%d", ph.name, i), dur); p != nil {
			profs = append(profs, p)
		}
	}
	stopSelf, err := profileSelf(pprofDir, ph.name+" etcd-and-client")
	if err != nil {
		logf("profile: %v", err)
	}
	self0 := procCPU(os.Getpid())
	busy0, idle0 := machineCPU()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			r := &results[w]
			di := w % len(daemons)
			url := daemons[di].https + "/v1/sign"
			var body bytes.Buffer
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= len(tokens) {
					ph.stopReason = "tokens"
					return
				}
				body.Reset()
				body.WriteString(`{"provisioner":"join","token":"`)
				body.WriteString(tokens[i])
				body.WriteString(`","csr":`)
				body.Write(l.csrs[i%len(l.csrs)])
				body.WriteString(`}`)
				lat, err := post(ctx, clients[di], url, body.Bytes(), nil)
				if err != nil {
					if ctx.Err() == nil {
						r.fail(err.Error())
					}
					continue
				}
				r.lat = append(r.lat, lat)
				perReplica[di].Add(1)
			}
		})
	}
	wg.Wait()
	ph.elapsed = time.Since(start)
	stopSelf()
	for _, p := range profs {
		p.wait()
	}
	for _, d := range daemons {
		ph.daemonCPU += d.cpuSeconds()
	}
	ph.daemonCPU -= cpu0
	// The etcd members run in this process: their CPU is in clientCPU.
	ph.clientCPU = procCPU(os.Getpid()) - self0
	busy1, idle1 := machineCPU()
	ph.otherCPU = max(0, busy1-busy0-ph.daemonCPU-ph.clientCPU)
	ph.idleCPU = idle1 - idle0
	for i := range results {
		ph.ok += len(results[i].lat)
		ph.errors += results[i].errors
		ph.lat = append(ph.lat, results[i].lat...)
		for _, m := range results[i].first {
			if len(ph.firstErrors) < 5 {
				ph.firstErrors = append(ph.firstErrors, m)
			}
		}
	}
	slices.Sort(ph.lat)
	for _, m := range ph.firstErrors {
		logf("%s: error: %s", ph.name, m)
	}
	for i := range perReplica {
		run.replicaOK[i] += perReplica[i].Load()
	}
	return int(min(next.Load(), int64(len(tokens))))
}

func (r *etcdRun) markdown(opts options) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("%s", etcdMarkBegin)
	p("<!-- Generated by cmd/agentca-bench --storage etcd; rerun it rather than editing this section. -->")
	p("")
	p("### etcd: replicas on a 3-member cluster")
	p("")
	p("- Command: `go run ./cmd/agentca-bench --binary bin/agentca --storage etcd --write docs/benchmarks.md` (`make bench-etcd`)")
	rev := r.revision
	if rev == "" {
		rev = "unknown"
	}
	p("- Setup: %d etcd members in the benchmark's process (loopback, %s, `--max-txn-ops 1024`), %d `agentca serve` replicas sharing them, POST /v1/sign round robin over them with a fresh join token per request, %s per concurrency; binary at %s", etcdMembers, r.fsync(), len(r.replicaOK), opts.duration, rev)
	p("- Machine: %d CPUs; load average before the run: %s. Everything (etcd, the replicas, the load generator) shares these CPUs", r.cpus, r.load)
	p("")
	p("| phase | issued/s | ok | errors | p50 | p99 | replicas' CPU | etcd + client CPU | other | idle | write txns | lost races | read first |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for i, ph := range r.phases {
		sc := r.stores[i]
		attempts := sc.commits + sc.conflicts
		p("| %s | **%.0f** | %d | %d | %s | %s | %.1f s | %.1f s | %.1f s | %.1f s | %.0f | %s | %s |", ph.name, ph.rate(), ph.ok, ph.errors,
			ph.pct(0.5).Round(100*time.Microsecond), ph.pct(0.99).Round(100*time.Microsecond), ph.daemonCPU, ph.clientCPU, ph.otherCPU, ph.idleCPU,
			attempts, percent(sc.conflicts, attempts), percent(sc.reads, attempts))
	}
	p("")
	p("Issued per replica over the run: %s. Write txns: the replicas' write transactions (agentca_etcd_commits_total + agentca_etcd_conflicts_total); lost races: those that lost a compare and were tried again; read first: attempts that read their keys before writing (the others went on what the replica knew).", strings.Trim(fmt.Sprint(r.replicaOK), "[]"))
	for _, ph := range r.phases {
		if ph.concurrency == 64 {
			p("")
			p("Target ≥ 1,500 issuances/s in total at c=64: %s (%.0f/s).", metNot(ph.rate() >= 1500), ph.rate())
		}
	}
	p("%s", etcdMarkEnd)
	return b.String()
}

// writeSection replaces the text between begin and end in path (or
// appends md when the markers are absent).
func writeSection(path, begin, end, md string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	var out string
	if i >= 0 && j > i {
		out = s[:i] + strings.TrimSuffix(md, "\n") + s[j+len(end):]
	} else {
		out = strings.TrimRight(s, "\n") + "\n\n" + md
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// copyDir copies a state directory (regular files and directories, with
// their modes; not the admin socket).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, info.Mode().Perm())
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, info.Mode().Perm())
		}
		return nil
	})
}

// binaryRevision is the binary's vcs.revision (12 digits), or "".
func binaryRevision(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value[:min(12, len(s.Value))]
		}
	}
	return ""
}

// profileSelf starts a CPU profile of this process in dir (none when dir
// is empty) and returns the function that stops it.
func profileSelf(dir, name string) (func(), error) {
	if dir == "" {
		return func() {}, nil
	}
	path := filepath.Join(dir, strings.NewReplacer(" ", "-", "=", "").Replace(name)+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return func() {}, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		logf("profile %s", path)
	}, nil
}

// storeCounts are the etcd store counters of the replicas' /metrics,
// summed.
type storeCounts struct{ commits, conflicts, reads float64 }

func (a storeCounts) minus(b storeCounts) storeCounts {
	return storeCounts{a.commits - b.commits, a.conflicts - b.conflicts, a.reads - b.reads}
}

// scrapeStores sums the replicas' etcd store counters; a replica that
// does not answer counts zero (the report then shows it).
func scrapeStores(ctx context.Context, daemons []*daemon) storeCounts {
	var sc storeCounts
	for _, d := range daemons {
		body, err := httpGet(ctx, d.http+"/metrics")
		if err != nil {
			logf("metrics of %s: %v", d.http, err)
			continue
		}
		for line := range strings.Lines(string(body)) {
			name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			switch name {
			case "agentca_etcd_commits_total":
				sc.commits += v
			case "agentca_etcd_conflicts_total":
				sc.conflicts += v
			case "agentca_etcd_reads_total":
				sc.reads += v
			}
		}
	}
	return sc
}

func percent(part, whole float64) string {
	if whole == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*part/whole)
}
