package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
)

// The workload phases: a real `agentca agent` process, attested to the
// daemon with a join token, serving go-spiffe clients (this process, so
// its uid) on its unix socket. Each client has its own connection, as
// separate workload processes would. Measured: FetchX509SVID from the
// agent's cache at 64 and 1 callers (issue 18: p99 ≤ 1 ms), ValidateJWTSVID
// (issue 19: p99 ≤ 1 ms) and FetchJWTSVID (cached) through the agent, and
// the agent's RSS once it holds 1,000 workload identities (issue 18:
// ≤ 60 MB). "agent CPU" is the agent process's utime+stime.

// agentIdentities is how many identities the memory step loads.
const agentIdentities = 1000

const (
	wlAudience    = "https://svc.bench.example.org"
	maxAgentRSSMB = 60
)

// workloadRun is the result of the workload phases.
type workloadRun struct {
	phases     []*phase // daemonCPU holds the agent's CPU
	identities int
	loadTime   time.Duration // signing them all through the agent
	rssBefore  int64         // a fresh agent's VmRSS with one identity (bytes)
	rss        int64         // its VmRSS with them, right after
	rssSettled int64         // and 5 s later (the Go runtime returns freed pages gradually)
	hwm        int64         // its VmHWM (peak)
	anon, file int64         // RssAnon and RssFile (the binary's mapped pages) of rssSettled
}

// nodeAgent is a running `agentca agent`.
type nodeAgent struct {
	cmd     *exec.Cmd
	sock    string
	logPath string
}

func (a *nodeAgent) stop() {
	if a.cmd.Process != nil {
		_ = a.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = a.cmd.Process.Kill()
			<-done
		}
	}
}

// startNodeAgent starts `agentca agent` against d with its socket and
// data under tmp, and waits for the socket.
func startNodeAgent(ctx context.Context, d *daemon, tmp string) (*nodeAgent, error) {
	toks, err := d.createTokens(ctx, "spiffe://"+trustDomain+"/node/bench", 1)
	if err != nil {
		return nil, err
	}
	tokFile := filepath.Join(tmp, "node-token")
	if err := os.WriteFile(tokFile, []byte(toks[0]+"\n"), 0o600); err != nil {
		return nil, err
	}
	a := &nodeAgent{sock: filepath.Join(tmp, "agent.sock"), logPath: filepath.Join(tmp, "agent.log")}
	logf, err := os.Create(a.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.cmd = exec.CommandContext(ctx, d.binary, "agent", "--ca", d.https, "--root", filepath.Join(d.dir, "roots.pem"),
		"--token-file", tokFile, "--data-dir", filepath.Join(tmp, "node"), "--socket", a.sock)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if fi, err := os.Stat(a.sock); err == nil && fi.Mode().Type() == os.ModeSocket {
			return a, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			a.stop()
			return nil, fmt.Errorf("agentca agent did not open its socket; see %s: %s", a.logPath, tail(a.logPath, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createDefinitions creates definitions on the daemon through its admin
// socket, 8 at a time.
func createDefinitions(ctx context.Context, d *daemon, defs []map[string]any) error {
	hc, tr := d.adminClient(8)
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, len(defs))
	next := make(chan map[string]any)
	for range 8 {
		wg.Go(func() {
			for def := range next {
				b, _ := json.Marshal(def)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agentca-admin/admin/v1/workloads", bytes.NewReader(b))
				if err != nil {
					errs <- err
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					errs <- fmt.Errorf("POST /admin/v1/workloads %s: %d", def["id"], resp.StatusCode)
				}
			}
		})
	}
	for _, def := range defs {
		next <- def
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// runWorkloadPhases runs the workload phases, unless skipped.
func runWorkloadPhases(ctx context.Context, opts options, d *daemon, rep *report, tmp string) error {
	if !opts.runs("workload") || ctx.Err() != nil {
		return nil
	}
	uidSel := "unix:uid:" + strconv.Itoa(os.Getuid())
	if err := createDefinitions(ctx, d, []map[string]any{{"id": "bench", "spiffe_id": "spiffe://" + trustDomain + "/w/bench",
		"selectors": []string{uidSel}, "node_provisioners": []string{"join"}}}); err != nil {
		return err
	}
	na, err := startNodeAgent(ctx, d, tmp)
	if err != nil {
		return err
	}
	defer na.stop()
	pid := na.cmd.Process.Pid
	wr := &workloadRun{}
	rep.workload = wr
	clients := make([]*workloadapi.Client, 64)
	for i := range clients {
		if clients[i], err = workloadapi.New(ctx, workloadapi.WithAddr("unix://"+na.sock),
			workloadapi.WithDialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))); err != nil {
			return err
		}
		defer clients[i].Close()
	}
	// The SVID signed once, then served from the cache.
	if _, err := clients[0].FetchX509SVID(ctx); err != nil {
		return fmt.Errorf("FetchX509SVID through agentca agent: %w (agent log: %s)", err, tail(na.logPath, 5))
	}
	jwt, err := clients[0].FetchJWTSVID(ctx, jwtsvid.Params{Audience: wlAudience})
	if err != nil {
		return fmt.Errorf("FetchJWTSVID through agentca agent: %w", err)
	}
	tok := jwt.Marshal()
	if _, err := clients[0].ValidateJWTSVID(ctx, tok, wlAudience); err != nil {
		return fmt.Errorf("ValidateJWTSVID through agentca agent: %w", err)
	}
	calls := []struct {
		name string
		c    int
		call func(ctx context.Context, cl *workloadapi.Client) error
	}{
		{"wl-x509 c=64", 64, func(ctx context.Context, cl *workloadapi.Client) error { _, err := cl.FetchX509SVID(ctx); return err }},
		{"wl-x509 c=1", 1, func(ctx context.Context, cl *workloadapi.Client) error { _, err := cl.FetchX509SVID(ctx); return err }},
		{"wl-jwt-fetch c=64", 64, func(ctx context.Context, cl *workloadapi.Client) error {
			_, err := cl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: wlAudience})
			return err
		}},
		{"wl-jwt-validate c=64", 64, func(ctx context.Context, cl *workloadapi.Client) error {
			_, err := cl.ValidateJWTSVID(ctx, tok, wlAudience)
			return err
		}},
		{"wl-jwt-validate c=1", 1, func(ctx context.Context, cl *workloadapi.Client) error {
			_, err := cl.ValidateJWTSVID(ctx, tok, wlAudience)
			return err
		}},
	}
	dur := min(opts.duration, 5*time.Second)
	for _, k := range calls {
		if ctx.Err() != nil {
			break
		}
		ph := agentPhase(ctx, k.name, pid, k.c, dur, func(ctx context.Context, w int) error { return k.call(ctx, clients[w]) })
		logf("%s: %d calls in %.2fs = %.0f/s, p50 %s p99 %s, agent %.2f cores (%.0f µs per call), client %.0f µs per call, %d errors",
			ph.name, ph.ok, ph.elapsed.Seconds(), ph.rate(), fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)), ph.daemonCPU/ph.elapsed.Seconds(),
			ph.daemonCPU/max(float64(ph.ok), 1)*1e6, ph.clientCPU/max(float64(ph.ok), 1)*1e6, ph.errors)
		wr.phases = append(wr.phases, ph)
		rep.phases = append(rep.phases, ph)
	}
	// The memory step on a fresh agent (another node), so that what the
	// call phases left in the first one's heap is not counted.
	na.stop()
	fresh := filepath.Join(tmp, "fresh")
	if err := os.MkdirAll(fresh, 0o700); err != nil {
		return err
	}
	na2, err := startNodeAgent(ctx, d, fresh)
	if err != nil {
		return err
	}
	defer na2.stop()
	cl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+na2.sock),
		workloadapi.WithDialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20))))
	if err != nil {
		return err
	}
	defer cl.Close()
	return loadIdentities(ctx, d, na2, cl, wr)
}

// loadIdentities defines agentIdentities-1 more identities for this
// process's uid, has the agent sign them all (one FetchX509SVID stream
// gets them), and reads its memory.
func loadIdentities(ctx context.Context, d *daemon, na *nodeAgent, cl *workloadapi.Client, wr *workloadRun) error {
	uidSel := "unix:uid:" + strconv.Itoa(os.Getuid())
	defs := make([]map[string]any, agentIdentities-1)
	for i := range defs {
		defs[i] = map[string]any{"id": "mem-" + strconv.Itoa(i), "spiffe_id": fmt.Sprintf("spiffe://%s/w/mem-%04d", trustDomain, i),
			"selectors": []string{uidSel}, "node_provisioners": []string{"join"}}
	}
	pid := na.cmd.Process.Pid
	if _, err := cl.FetchX509SVID(ctx); err != nil {
		return fmt.Errorf("FetchX509SVID through the fresh agent: %w", err)
	}
	wr.rssBefore, _ = procStatusKB(pid, "VmRSS")
	logf("workload: a fresh agent's RSS is %.1f MiB with one identity; defining %d more for this process", mib(wr.rssBefore), len(defs))
	if err := createDefinitions(ctx, d, defs); err != nil {
		return err
	}
	start := time.Now()
	for deadline := start.Add(3 * time.Minute); ; {
		svids, err := cl.FetchX509SVIDs(ctx)
		if err == nil && len(svids) >= agentIdentities {
			wr.identities = len(svids)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the agent did not serve %d identities (%d, %v); see %s", agentIdentities, len(svids), err, na.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wr.loadTime = time.Since(start)
	wr.rss, _ = procStatusKB(pid, "VmRSS")
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	wr.rssSettled, _ = procStatusKB(pid, "VmRSS")
	wr.hwm, _ = procStatusKB(pid, "VmHWM")
	wr.anon, _ = procStatusKB(pid, "RssAnon")
	wr.file, _ = procStatusKB(pid, "RssFile")
	logf("workload: the agent serves %d identities (signed in %s); agent RSS %.1f MiB, %.1f MiB 5 s later (anonymous %.1f MiB, file-backed %.1f MiB), peak %.1f MiB (bound %d MB)",
		wr.identities, wr.loadTime.Round(time.Millisecond), mib(wr.rss), mib(wr.rssSettled), mib(wr.anon), mib(wr.file), mib(wr.hwm), maxAgentRSSMB)
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// agentPhase runs call from c workers for dur and measures the agent's
// and this process's CPU.
func agentPhase(ctx context.Context, name string, pid, c int, dur time.Duration, call func(ctx context.Context, w int) error) *phase {
	ph := &phase{name: name, kind: "workload", concurrency: c}
	results := make([]result, c)
	cpu0, self0 := procCPU(pid), procCPU(os.Getpid())
	busy0, idle0 := machineCPU()
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			r := &results[w]
			r.lat = make([]time.Duration, 0, 8192)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				if err := call(ctx, w); err != nil {
					r.fail(err.Error())
					continue
				}
				r.lat = append(r.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	ph.elapsed = time.Since(start)
	ph.daemonCPU = procCPU(pid) - cpu0
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
	ph.stopReason = "time"
	return ph
}

// markdown is the workload phases' part of the report.
func (wr *workloadRun) markdown() string {
	var b bytes.Buffer
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	p("\nNode agent (`agentca agent` as a child process, go-spiffe `workloadapi` clients in this process, one connection each; \"daemon CPU\" in the table above is the agent's for these phases):\n\n")
	p("| phase | calls/s | p50 | p99 | agent CPU per call | client CPU per call |\n|---|---:|---:|---:|---:|---:|\n")
	for _, ph := range wr.phases {
		p("| %s | %.0f | %s | %s | %.0f µs | %.0f µs |\n", ph.name, ph.rate(), fmtDur(ph.pct(0.50)), fmtDur(ph.pct(0.99)),
			ph.daemonCPU/max(float64(ph.ok), 1)*1e6, ph.clientCPU/max(float64(ph.ok), 1)*1e6)
	}
	if wr.identities > 0 {
		verdict := "within"
		if float64(wr.rssSettled) > maxAgentRSSMB*1e6 {
			verdict = "over"
		}
		p("\n- Agent memory with %s workload identities (one caller holding them all, signed through the agent in %s): VmRSS **%.1f MiB** "+
			"5 s after loading them, of which %.1f MiB anonymous and %.1f MiB the binary's mapped pages (%.1f MiB right after loading; %.1f MiB with one identity before), VmHWM %.1f MiB, in a fresh agent (not the one of the call phases); %s issue 18's bound of %d MB.\n",
			fmtInt(float64(wr.identities)), wr.loadTime.Round(time.Millisecond), mib(wr.rssSettled), mib(wr.anon), mib(wr.file), mib(wr.rss), mib(wr.rssBefore), mib(wr.hwm), verdict, maxAgentRSSMB)
	}
	return b.String()
}
