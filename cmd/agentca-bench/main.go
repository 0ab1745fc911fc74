// Command agentca-bench is agentca's load generator. It drives a real
// `agentca serve` child process over HTTPS on 127.0.0.1 and reports
// durable issuances per second, latency percentiles and the daemon's CPU
// and memory, next to the machine's ceiling for the same cryptography.
//
//	go build -o bin/agentca ./cmd/agentca
//	go run ./cmd/agentca-bench --binary bin/agentca --write docs/benchmarks.md
//
// What it does, in order:
//
//  1. measures the machine ceiling: x509.CreateCertificate (P-256 issuer,
//     P-256 leaf) plus a CSR signature check, on every core, for ~3 s;
//  2. `agentca init` in a temporary directory on free loopback ports, and
//     `agentca serve` as a child process (stderr to serve.log);
//  3. pre-creates single-use join tokens with `agentca token create
//     --count N --json` (one call per 10,000) and a pool of P-256 CSRs;
//  4. for each --concurrency, POST /v1/sign with a fresh token per request
//     over keep-alive HTTP/1.1 connections (one per worker) for --duration,
//     never more requests than tokens;
//  5. enrolls 64 agents and, at concurrency 64, has each renew over mTLS
//     its latest certificate, on a new connection each time, for
//     --duration: phase renew with an empty JSON body {} (renew keeping
//     the key), then phase renew-csr with a CSR for a key from the pool
//     (a fresh key, the agent's default);
//  6. stops the daemon with SIGTERM and checks that it exits 0.
//
// The daemon's CPU time comes from /proc/PID/stat (utime+stime) before and
// after each phase; its peak RSS from /proc/PID/status (VmHWM).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	binary      string
	duration    time.Duration
	concurrency []int
	renewConc   int
	agents      int
	csrPool     int
	ceilingDur  time.Duration
	write       string
	keep        bool
	pprofDir    string
	storage     string // "bbolt", or "etcd" for the replicas mode (etcd.go)
	replicas    int    // --etcd-replicas

	skip          map[string]bool // phases not to run
	k8s           bool            // the k8s-sign phase runs (the provisioner is configured)
	k8sDuration   time.Duration
	ocspDuration  time.Duration
	ocspConc      int
	ocspCerts     int
	revocations   int
	revokeConc    int
	revokeRateDur time.Duration
	bigStore      int // certificates in the big-store phase
	stormAgents   int // agents renewing at once in the storm phase
	stormConc     int

	// compare mode (compare.go): step-ca's binaries and the rounds.
	compare   bool
	stepCABin string
	stepBin   string
	rounds    int
}

// skippable are the phases --skip names.
var skippable = []string{"renew", "renew-csr", "storm", "k8s-sign", "ocsp-post", "ocsp-get", "revoke-latency", "revoke-rate", "big-store", "token", "jwt-svid", "workload", "token-exchange"}

func (o *options) runs(phase string) bool { return !o.skip[phase] }

func main() {
	opts := parseFlags()
	validate(&opts)
	limit := runLimit(opts)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.compare {
		md, err := runCompare(ctx, opts)
		if err == nil {
			fmt.Print("\n" + md)
			if opts.write != "" {
				err = writeBetween(opts.write, md, compareBegin, compareEnd)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "agentca-bench: %v\n", err)
			os.Exit(1)
		}
		return
	}

	switch opts.storage {
	case "bbolt":
	case "etcd":
		if opts.replicas < 1 || opts.replicas > 8 {
			fmt.Fprintf(os.Stderr, "agentca-bench: --etcd-replicas %d: want 1 to 8\n", opts.replicas)
			os.Exit(2)
		}
		if err := runEtcd(ctx, opts); err != nil {
			fmt.Fprintf(os.Stderr, "agentca-bench: %v\n", err)
			os.Exit(1)
		}
		return
	default:
		fmt.Fprintln(os.Stderr, "agentca-bench: --storage must be bbolt or etcd")
		os.Exit(2)
	}
	rep, err := run(ctx, opts)
	if rep != nil {
		md := rep.markdown()
		fmt.Println()
		fmt.Print(md)
		if opts.write != "" {
			if werr := writeReport(opts.write, md); werr != nil {
				fmt.Fprintf(os.Stderr, "agentca-bench: --write: %v\n", werr)
				if err == nil {
					err = werr
				}
			} else {
				fmt.Fprintf(os.Stderr, "agentca-bench: report written to %s\n", opts.write)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentca-bench: %v\n", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into options: the flags, then the
// --concurrency and --skip lists (exit 2 on a bad one).
func parseFlags() options {
	var opts options
	var conc string
	flag.StringVar(&opts.binary, "binary", "bin/agentca", "the agentca binary to benchmark")
	flag.DurationVar(&opts.duration, "duration", 10*time.Second, "length of each load phase")
	flag.StringVar(&conc, "concurrency", "1,16,64", "comma-separated concurrencies for the /v1/sign phases")
	flag.IntVar(&opts.renewConc, "renew-concurrency", 64, "concurrent workers in the /v1/renew phase (one enrolled agent each)")
	flag.IntVar(&opts.csrPool, "csr-pool", 256, "number of pre-generated P-256 keys+CSRs reused across /v1/sign requests")
	flag.DurationVar(&opts.ceilingDur, "ceiling-duration", 3*time.Second, "how long to measure the machine ceiling")
	flag.StringVar(&opts.write, "write", "", "write the markdown report into this file (between the agentca-bench markers if it has them)")
	flag.BoolVar(&opts.keep, "keep", false, "keep the temporary state directory (serve.log, agentca.db)")
	flag.IntVar(&opts.replicas, "etcd-replicas", 2, "with --storage etcd: how many `agentca serve` replicas share the cluster")
	flag.StringVar(&opts.storage, "storage", "bbolt", "bbolt: the phases below against one daemon; etcd: only /v1/sign at each --concurrency against two replicas sharing a 3-member etcd cluster started in this process (etcd.go)")
	var skip string
	flag.StringVar(&skip, "skip", "", "comma-separated phases not to run: "+strings.Join(skippable, ", "))
	flag.DurationVar(&opts.k8sDuration, "k8s-duration", 5*time.Second, "length of the k8s-sign phase (its RS256 tokens are signed beforehand, about 0.4 ms of CPU each)")
	flag.DurationVar(&opts.ocspDuration, "ocsp-duration", 5*time.Second, "length of each OCSP phase")
	flag.IntVar(&opts.ocspConc, "ocsp-concurrency", 64, "concurrent workers (keep-alive connections) in the OCSP phases")
	flag.IntVar(&opts.ocspCerts, "ocsp-certs", 256, "certificates enrolled for the OCSP and revocation phases")
	flag.IntVar(&opts.revocations, "revocations", 50, "certificates revoked one at a time in the revoke-latency phase")
	flag.IntVar(&opts.revokeConc, "revoke-concurrency", 16, "concurrent admin-socket clients in the revoke-rate phase")
	flag.DurationVar(&opts.revokeRateDur, "revoke-rate-duration", 3*time.Second, "length of the revoke-rate phase")
	flag.IntVar(&opts.stormAgents, "storm-agents", 20_000, "agents enrolled for the storm phase, then each renewed once with a fresh key on a new connection, all at once (storm.go)")
	flag.IntVar(&opts.stormConc, "storm-concurrency", 512, "concurrent renewals in the storm phase")
	flag.IntVar(&opts.bigStore, "big-store-certs", 1_000_000, "certificates written into the store of the big-store phase (daemon start-up, RSS and inclusion proofs at that size)")
	flag.StringVar(&opts.pprofDir, "pprof", "", "profile the daemon: run a pprof-enabled build of `agentca serve` (./cmd/agentca-bench/profserve, built with `go build`) and save one CPU profile per phase in this directory")
	flag.BoolVar(&opts.compare, "compare", false, "compare mode (make bench-compare): run the sign and renew paths against agentca and step-ca (badger, bbolt), interleaved, for --rounds rounds of --duration each")
	flag.StringVar(&opts.stepCABin, "step-ca", "", "with --compare: the step-ca binary")
	flag.StringVar(&opts.stepBin, "step", "", "with --compare: the step CLI binary (runs `step ca init`)")
	flag.IntVar(&opts.rounds, "rounds", 3, "with --compare: rounds of every path on every CA")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: agentca-bench [flags]\n\nLoad generator for agentca: /v1/sign and /v1/renew against a local daemon.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "agentca-bench: takes no arguments")
		os.Exit(2)
	}
	for _, f := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			fmt.Fprintf(os.Stderr, "agentca-bench: --concurrency: %q is not a number between 1 and 4096\n", f)
			os.Exit(2)
		}
		opts.concurrency = append(opts.concurrency, n)
	}
	opts.agents = opts.renewConc
	opts.skip = map[string]bool{}
	for _, f := range strings.Split(skip, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(skippable, f) {
			fmt.Fprintf(os.Stderr, "agentca-bench: --skip: %q is not one of %s\n", f, strings.Join(skippable, ", "))
			os.Exit(2)
		}
		opts.skip[f] = true
	}
	opts.k8s = opts.runs("k8s-sign")
	return opts
}

// validate checks the ranges of the options and resolves --binary to an
// absolute path that exists (exit 2, or 1 for a missing binary).
func validate(opts *options) {
	if opts.bigStore < 1000 || opts.bigStore > 10_000_000 {
		fmt.Fprintln(os.Stderr, "agentca-bench: --big-store-certs must be between 1000 and 10000000")
		os.Exit(2)
	}
	if opts.stormAgents < 0 || opts.stormAgents > 200_000 || opts.stormConc < 1 || opts.stormConc > 4096 {
		fmt.Fprintln(os.Stderr, "agentca-bench: --storm-agents must be 0..200000 and --storm-concurrency 1..4096")
		os.Exit(2)
	}
	for _, d := range []time.Duration{opts.k8sDuration, opts.ocspDuration, opts.revokeRateDur} {
		if d < time.Second || d > 10*time.Minute {
			fmt.Fprintln(os.Stderr, "agentca-bench: --k8s-duration, --ocsp-duration and --revoke-rate-duration must be between 1s and 10m")
			os.Exit(2)
		}
	}
	if opts.ocspConc < 1 || opts.ocspConc > 4096 || opts.revokeConc < 1 || opts.revokeConc > 4096 ||
		opts.ocspCerts < 1 || opts.ocspCerts > 10_000 || opts.revocations < 1 || opts.revocations > opts.ocspCerts {
		fmt.Fprintln(os.Stderr, "agentca-bench: --ocsp-concurrency and --revoke-concurrency must be 1..4096, --ocsp-certs 1..10000, --revocations 1..--ocsp-certs")
		os.Exit(2)
	}
	if opts.duration < time.Second || opts.duration > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "agentca-bench: --duration must be between 1s and 10m")
		os.Exit(2)
	}
	if opts.renewConc < 0 || opts.renewConc > 4096 || opts.csrPool < 1 {
		fmt.Fprintln(os.Stderr, "agentca-bench: --renew-concurrency must be 0..4096 and --csr-pool at least 1")
		os.Exit(2)
	}
	bin, err := filepath.Abs(opts.binary)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "agentca-bench: --binary %s: %v (build it with `go build -o bin/agentca ./cmd/agentca`)\n", opts.binary, err)
		os.Exit(1)
	}
	opts.binary = bin
}

// runLimit is the backstop that bounds the whole run (and checks the
// --compare flags, exit 2).
func runLimit(opts options) time.Duration {
	limit := time.Duration(len(opts.concurrency)+2)*(opts.duration+time.Minute) + opts.ceilingDur + 2*time.Minute +
		opts.k8sDuration + 2*opts.ocspDuration + opts.revokeRateDur + revokeLatencyMax + 4*time.Minute
	if opts.runs("big-store") {
		limit += time.Duration(opts.bigStore/1000)*time.Second + 3*time.Minute
	}
	if opts.runs("storm") {
		limit += time.Duration(opts.stormAgents/100)*time.Second + time.Minute
	}
	if opts.compare {
		if opts.rounds < 1 || opts.rounds > 20 || opts.stepCABin == "" || opts.stepBin == "" {
			fmt.Fprintln(os.Stderr, "agentca-bench: --compare needs --step-ca and --step, and --rounds between 1 and 20")
			os.Exit(2)
		}
		limit = time.Duration(opts.rounds*len(comparePaths)*3)*(opts.duration+20*time.Second) + 5*time.Minute
	}
	return limit
}

// logf prints progress to stderr, so stdout carries only the report.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, opts options) (*report, error) {
	rep := newReport(opts)
	logf("machine: %d CPUs, %s; %s", rep.machine.cpus, rep.machine.model, rep.machine.goVersion)

	logf("measuring the machine ceiling for %s on %d goroutines", opts.ceilingDur, rep.machine.cpus)
	ceil, err := measureCeiling(ctx, opts.ceilingDur)
	if err != nil {
		return nil, fmt.Errorf("ceiling: %w", err)
	}
	rep.ceiling = ceil
	logf("ceiling: %.0f CreateCertificate+CheckSignature/s", ceil.rate)

	dir, err := os.MkdirTemp("", "agentca-bench-")
	if err != nil {
		return nil, err
	}
	keep := opts.keep
	defer func() {
		if keep {
			logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	d, err := startDaemon(ctx, opts, dir)
	if err != nil {
		keep = true
		return nil, err
	}
	defer d.kill()
	rep.daemon = d.info

	lg, err := newLoad(ctx, d, opts)
	if err != nil {
		keep = true
		return rep, err
	}
	defer lg.close()

	r := &benchRun{opts: opts, d: d, lg: lg, rep: rep, ceil: ceil}
	if err := r.signPhases(ctx); err != nil {
		keep = true
		return rep, err
	}
	// k8s-sign right after the join-token phases, so that the two are
	// compared on the same store at about the same size.
	if err := r.k8sSignPhase(ctx); err != nil {
		keep = true
		return rep, err
	}
	if err := r.renewPhases(ctx); err != nil {
		keep = true
		return rep, err
	}
	if err := r.stormPhase(ctx); err != nil { // storm.go
		keep = true
		return rep, err
	}

	if err := runTokenPhase(ctx, opts, lg, rep); err != nil { // token.go
		keep = true
		return rep, err
	}
	if err := runExchangePhase(ctx, opts, lg, rep); err != nil { // exchange.go
		keep = true
		return rep, err
	}
	if err := runJWTSVIDPhase(ctx, opts, lg, rep); err != nil { // jwtsvid.go
		keep = true
		return rep, err
	}
	if err := runWorkloadPhases(ctx, opts, d, rep, dir); err != nil { // workload.go
		keep = true
		return rep, err
	}

	if err := runRevocationPhases(ctx, opts, d, lg, rep, r.joinRate, r.maxC); err != nil {
		keep = true
		return rep, err
	}

	if err := r.stopDaemon(); err != nil {
		keep = true
		return rep, err
	}
	return rep, r.finish(ctx)
}

// benchRun is what the parts of run share: the daemon and its load, the
// report, and what the sign phases measured that the later phases size
// themselves by.
type benchRun struct {
	opts options
	d    *daemon
	lg   *load
	rep  *report
	ceil ceiling

	warm     *phase  // the warm-up phase
	estimate float64 // its rate
	maxC     int     // the highest --concurrency
	joinRate float64 // the join-token sign rate at maxC, or the estimate
	// joinAtMax is the join-token sign phase at the highest concurrency.
	joinAtMax *phase
}

// signPhases runs the warm-up at the highest concurrency, then one /v1/sign
// phase with join tokens at each --concurrency.
func (r *benchRun) signPhases(ctx context.Context) error {
	opts, d, lg, rep, ceil := r.opts, r.d, r.lg, r.rep, r.ceil
	// Warm-up at the highest concurrency: fills connection pools and the
	// daemon's heap, and estimates the rate to size the token batches.
	maxC := 0
	for _, c := range opts.concurrency {
		maxC = max(maxC, c)
	}
	warm := min(2*time.Second, opts.duration/2)
	if err := lg.ensureTokens(ctx, 10_000); err != nil {
		return err
	}
	w := lg.signPhase(ctx, "warm-up", maxC, warm, d.pprofURL, "")
	estimate := w.rate()
	logf("warm-up: %d issued, %.0f/s, %d errors", w.ok, estimate, w.errors)
	if w.ok == 0 {
		rep.phases = append(rep.phases, w)
		return fmt.Errorf("warm-up issued nothing: %s", strings.Join(w.firstErrors, "; "))
	}

	var joinAtMax *phase // the join-token sign phase at the highest concurrency
	for _, c := range opts.concurrency {
		if ctx.Err() != nil {
			break
		}
		// Enough tokens that the phase is bounded by time, not count:
		// the daemon cannot issue faster than the machine ceiling, but
		// the ceiling may have been measured while something else ran,
		// so at least twice the warm-up rate. At most 200,000.
		need := int(max(2*estimate, ceil.rate) * opts.duration.Seconds())
		need = min(max(need, 2*c), 200_000)
		if err := lg.ensureTokens(ctx, need); err != nil {
			return err
		}
		ph := lg.signPhase(ctx, fmt.Sprintf("sign c=%d", c), c, opts.duration, d.pprofURL, opts.pprofDir)
		logf("%s: %d issued in %.2fs = %.0f/s, p50 %s p99 %s, %d errors", ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(),
			fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), ph.errors)
		rep.phases = append(rep.phases, ph)
		if c == maxC {
			joinAtMax = ph
		}
	}
	joinRate := estimate
	if joinAtMax != nil && joinAtMax.ok > 0 {
		joinRate = joinAtMax.rate()
	}

	r.warm, r.estimate, r.maxC, r.joinRate, r.joinAtMax = w, estimate, maxC, joinRate, joinAtMax
	return nil
}

// k8sSignPhase runs /v1/sign with projected service-account tokens at the
// highest concurrency, when the k8s-sign phase runs.
func (r *benchRun) k8sSignPhase(ctx context.Context) error {
	opts, d, lg, rep, joinRate, maxC, joinAtMax := r.opts, r.d, r.lg, r.rep, r.joinRate, r.maxC, r.joinAtMax
	if opts.k8s && ctx.Err() == nil {
		// One token per request: enough for 1.3 times the join-token
		// rate over the phase, at most 100,000.
		n := min(max(int(1.3*joinRate*opts.k8sDuration.Seconds()), 2*maxC), 100_000)
		t0 := time.Now()
		toks, err := d.k8s.tokens(ctx, n)
		if err != nil {
			return err
		}
		logf("signed %d RS256 projected service-account tokens (one pod each) in %s", n, time.Since(t0).Round(time.Millisecond))
		ph := &phase{name: fmt.Sprintf("k8s-sign c=%d", maxC), kind: "sign"}
		lg.signLoad(ctx, ph, maxC, opts.k8sDuration, k8sProvisioner, toks, d.pprofURL, opts.pprofDir)
		logf("%s: %d issued in %.2fs = %.0f/s, p50 %s p99 %s, %d errors", ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(),
			fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), ph.errors)
		rep.phases = append(rep.phases, ph)
		rep.k8s, rep.joinAtMax = ph, joinAtMax
	}
	return nil
}

// renewPhases enrolls the agents and runs renew and renew-csr (those not
// skipped) with them.
func (r *benchRun) renewPhases(ctx context.Context) error {
	opts, d, lg, rep, estimate, ceil := r.opts, r.d, r.lg, r.rep, r.estimate, r.ceil
	if opts.renewConc > 0 && ctx.Err() == nil {
		logf("enrolling %d agents", opts.agents)
		if err := lg.ensureTokens(ctx, opts.agents); err != nil {
			return err
		}
		agents, err := lg.enroll(ctx, opts.agents)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		rep.enrolled += len(agents)
		// Bounded by count as well: no more renewals than the sign
		// phases' token budget.
		maxRate := max(2*estimate, ceil.rate)
		for _, fresh := range []bool{false, true} {
			name := map[bool]string{false: "renew", true: "renew-csr"}[fresh]
			if !opts.runs(name) || ctx.Err() != nil {
				continue
			}
			ph := lg.renewPhase(ctx, fmt.Sprintf("%s c=%d", name, opts.renewConc), agents, fresh, opts.duration, maxRate, d.pprofURL, opts.pprofDir)
			logf("%s: %d renewed in %.2fs = %.0f/s, p50 %s p99 %s, %d errors", ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(),
				fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), ph.errors)
			rep.phases = append(rep.phases, ph)
		}
	}
	return nil
}

// stopDaemon records the daemon's peak RSS, stops it with SIGTERM, checks
// that it exits 0 and fills in what the report says of it.
func (r *benchRun) stopDaemon() error {
	d, lg, rep := r.d, r.lg, r.rep
	rep.daemon.peakRSS = d.peakRSS()
	lg.close()
	logf("stopping the daemon with SIGTERM")
	code, stopErr := d.stop(30 * time.Second)
	rep.daemon.exitCode = code
	rep.daemon.logErrors, rep.daemon.logLines = d.logSummary()
	if fi, err := os.Stat(filepath.Join(d.dir, "agentca.db")); err == nil {
		rep.daemon.dbBytes = fi.Size()
	}
	rep.daemon.tokens = len(lg.tokens)
	rep.daemon.issued = r.warm.ok + rep.enrolled
	for _, ph := range rep.phases {
		if ph.kind == "sign" || ph.kind == "renew" {
			rep.daemon.issued += ph.ok
		}
	}
	if stopErr != nil {
		return stopErr
	}
	if code != 0 {
		return fmt.Errorf("daemon exited with status %d after SIGTERM (want 0); see %s", code, d.logPath)
	}
	logf("daemon exited 0")
	return nil
}

// finish measures the ceiling again, runs the big-store phase, and returns
// the phases' errors (or the interruption) as one error.
func (r *benchRun) finish(ctx context.Context) error {
	opts, rep := r.opts, r.rep
	// The ceiling again, now that the daemon is gone: other work on the
	// machine shows up as a difference between the two.
	if after, err := measureCeiling(ctx, opts.ceilingDur); err == nil {
		rep.ceilingAfter = after
		logf("ceiling after the run: %.0f/s", after.rate)
	}
	if opts.runs("big-store") {
		bs, err := runBigStore(ctx, opts.binary, opts.bigStore, opts.keep)
		if err != nil {
			return fmt.Errorf("big-store: %w", err)
		}
		rep.bigStore = bs
		logf("big-store: %d certificates, start-up %s, RSS %.0f MiB (peak %.0f MiB), inclusion proof p99 %s",
			bs.Certificates, bs.StartUp.Round(time.Millisecond), float64(bs.RSSAfter)/(1<<20), float64(bs.HWM)/(1<<20), bs.ProofP99)
	}
	var failed []string
	for _, ph := range rep.phases {
		if ph.errors > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d errors", ph.name, ph.errors))
		}
	}
	if rl := rep.revoke; rl != nil && rl.errors > 0 {
		failed = append(failed, fmt.Sprintf("revoke-latency: %d errors", rl.errors))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// revokeLatencyMax bounds the revoke-latency phase (and its sign load).
const revokeLatencyMax = 30 * time.Second

// runRevocationPhases enrolls the certificates the OCSP and revocation
// phases ask about, then runs ocsp-post, ocsp-get, revoke-latency and
// revoke-rate (those not skipped), in that order: the revocations come
// last because they change what the responder and the CRL hold.
func runRevocationPhases(ctx context.Context, opts options, d *daemon, lg *load, rep *report, joinRate float64, maxC int) error {
	o := opts
	if ctx.Err() != nil || !(o.runs("ocsp-post") || o.runs("ocsp-get") || o.runs("revoke-latency") || o.runs("revoke-rate")) {
		return nil
	}
	var certs []*ocspCert
	if o.runs("ocsp-post") || o.runs("ocsp-get") || o.runs("revoke-latency") {
		logf("enrolling %d certificates for OCSP", o.ocspCerts)
		if err := lg.ensureTokens(ctx, o.ocspCerts); err != nil {
			return err
		}
		agents, err := lg.enroll(ctx, o.ocspCerts)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		rep.enrolled += len(agents)
		if certs, err = lg.ocspCerts(ctx, agents); err != nil {
			return err
		}
		if err := lg.ocspWarm(ctx, certs); err != nil {
			return err
		}
		logf("OCSP: %d requests built (SHA-1 CertID), responder cache warmed", len(certs))
	}
	for _, m := range []struct{ name, method string }{{"ocsp-post", "POST"}, {"ocsp-get", "GET"}} {
		if !o.runs(m.name) || ctx.Err() != nil {
			continue
		}
		ph := lg.ocspPhase(ctx, fmt.Sprintf("%s c=%d", m.name, o.ocspConc), m.method, certs, o.ocspConc, o.ocspDuration, d.pprofURL, o.pprofDir)
		logf("%s: %d responses in %.2fs = %.0f/s (%.0f%% of %d/s), p50 %s p99 %s, daemon %.2f cores, %d errors", ph.name, ph.ok,
			ph.elapsed.Seconds(), ph.rate(), 100*ph.rate()/ocspTarget, ocspTarget, fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)),
			ph.daemonCPU/ph.elapsed.Seconds(), ph.errors)
		rep.phases = append(rep.phases, ph)
	}
	if o.runs("revoke-latency") && ctx.Err() == nil {
		// Tokens for the sign load: 1.3 times the join-token rate over
		// the expected length (about 0.3 s a revocation, plus the ramp).
		expect := min(time.Duration(o.revocations)*300*time.Millisecond+3*time.Second, revokeLatencyMax)
		need := min(max(int(1.3*joinRate*expect.Seconds()), 2*maxC), 200_000)
		if err := lg.ensureTokens(ctx, need); err != nil {
			return err
		}
		logf("revoke-latency: revoking %d certificates one at a time under a sign load at c=%d", o.revocations, maxC)
		rl := lg.revokeLatency(ctx, certs, o.revocations, maxC, revokeLatencyMax)
		rep.revoke = rl
		logf("revoke-latency: %d revoked in %.1fs (%d under load); to OCSP p50 %s p99 %s max %s; to CRL p50 %s p99 %s max %s; sign load %.0f/s; %d errors",
			len(rl.call), rl.elapsed.Seconds(), rl.underLoad, fmtDur(quantile(rl.toOCSP, .5)), fmtDur(quantile(rl.toOCSP, .99)), fmtDur(quantile(rl.toOCSP, 1)),
			fmtDur(quantile(rl.toCRL, .5)), fmtDur(quantile(rl.toCRL, .99)), fmtDur(quantile(rl.toCRL, 1)), rl.load.rate(), rl.errors)
		for _, m := range rl.first {
			logf("revoke-latency: error: %s", m)
		}
		rep.phases = append(rep.phases, rl.load)
	}
	if o.runs("revoke-rate") && ctx.Err() == nil {
		// Serials enough for 10,000 revocations/s over the phase, at
		// most 60,000.
		serials, err := d.unrevokedSerials(ctx, min(max(int(10_000*o.revokeRateDur.Seconds()), 1000), 60_000))
		if err != nil {
			return err
		}
		ph := lg.revokeRatePhase(ctx, serials, o.revokeConc, o.revokeRateDur, d.pprofURL, o.pprofDir)
		logf("%s: %d revoked in %.2fs = %.0f/s, p50 %s p99 %s, %d errors", ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(),
			fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), ph.errors)
		rep.phases = append(rep.phases, ph)
	}
	return nil
}
