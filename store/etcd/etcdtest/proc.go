package etcdtest

// Members as processes of their own, so that a test can freeze one
// (SIGSTOP) or kill it the way a real fault would, without stopping the
// test process. The member process is the command in ./member, built once
// per test process (without the race detector), started with the member's
// configuration in an environment variable.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// memberEnv carries a member process's configuration.
const memberEnv = "AGENTCA_ETCDTEST_MEMBER"

// memberConfig is what a member process is told.
type memberConfig struct {
	Name, Dir, ClientURL, PeerURL, InitialCluster string
	MaxTxnOps                                     uint
}

// RunMemberIfAsked runs an etcd member and exits, when this process was
// started as one by StartProcesses; otherwise it returns at once.
func RunMemberIfAsked() {
	v := os.Getenv(memberEnv)
	if v == "" {
		return
	}
	var mc memberConfig
	if err := json.Unmarshal([]byte(v), &mc); err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest member:", err)
		os.Exit(2)
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = mc.Name, mc.Dir
	cu, _ := url.Parse(mc.ClientURL)
	pu, _ := url.Parse(mc.PeerURL)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = mc.InitialCluster
	cfg.InitialClusterToken = "etcdtest"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.MaxTxnOps = mc.MaxTxnOps
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdtest member:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcdtest member:", err)
	}
	e.Close()
	os.Exit(0)
}

// ProcCluster is a running etcd cluster whose members are processes.
type ProcCluster struct {
	members []*procMember
}

type procMember struct {
	name, clientURL string
	mu              sync.Mutex
	cmd             *exec.Cmd
	done            chan struct{}
}

// StartProcesses starts an n-member cluster, each member a process of its
// own (this test binary, see RunMemberIfAsked), with its data in
// t.TempDir(), waits until it has a leader, and stops it when t ends.
func StartProcesses(t testing.TB, n int, opts Options) *ProcCluster {
	t.Helper()
	if opts.MaxTxnOps == 0 {
		opts.MaxTxnOps = 1024
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	exe := memberBinary(t)
	ports, err := freePorts(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &ProcCluster{}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	t.Cleanup(c.Close)
	for i := range n {
		mc := memberConfig{Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			InitialCluster: strings.Join(initial, ","), MaxTxnOps: opts.MaxTxnOps}
		b, _ := json.Marshal(mc)
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), memberEnv+"="+string(b))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("etcdtest: start %s: %v", mc.Name, err)
		}
		m := &procMember{name: mc.Name, clientURL: mc.ClientURL, cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(m.done) }()
		c.members = append(c.members, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	for {
		if _, err := c.Leader(ctx); err == nil {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcdtest: the cluster had no leader within %s", opts.StartTimeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Endpoints returns every member's client URL.
func (c *ProcCluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL
	}
	return out
}

// Leader returns the index of the member that is the leader now, asking
// each running member.
func (c *ProcCluster) Leader(ctx context.Context) (int, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	ids := map[uint64]int{}
	var leader uint64
	for i, ep := range c.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			continue
		}
		ids[st.Header.MemberId] = i
		if st.Leader != 0 {
			leader = st.Leader
		}
	}
	if i, ok := ids[leader]; ok && leader != 0 {
		return i, nil
	}
	return -1, errors.New("etcdtest: no leader")
}

// Pause freezes member i (SIGSTOP): its connections stay open, nothing
// answers.
func (c *ProcCluster) Pause(i int) error { return c.signal(i, syscall.SIGSTOP) }

// Resume lets member i run again (SIGCONT).
func (c *ProcCluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT) }

// Kill kills member i (SIGKILL) and waits for it to exit.
func (c *ProcCluster) Kill(i int) {
	m := c.members[i]
	_ = c.signal(i, syscall.SIGKILL)
	<-m.done
}

func (c *ProcCluster) signal(i int, sig os.Signal) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd.Process.Signal(sig)
}

// Close stops every member (SIGCONT first, for a paused one).
func (c *ProcCluster) Close() {
	for _, m := range c.members {
		_ = m.cmd.Process.Signal(syscall.SIGCONT)
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range c.members {
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
}

var (
	memberOnce sync.Once
	memberExe  string
	memberErr  error
)

// memberBinary builds ./member once per test process (in the OS temp
// directory: several tests share it) and returns its path.
func memberBinary(t testing.TB) string {
	t.Helper()
	memberOnce.Do(func() {
		dir, err := os.MkdirTemp("", "etcdtest-member-")
		if err != nil {
			memberErr = err
			return
		}
		memberExe = filepath.Join(dir, "member")
		out, err := exec.Command("go", "build", "-o", memberExe, "github.com/agentca/agentca/store/etcd/etcdtest/member").CombinedOutput()
		if err != nil {
			memberErr = fmt.Errorf("building the etcd member: %v\n%s", err, out)
		}
	})
	if memberErr != nil {
		t.Fatal(memberErr)
	}
	return memberExe
}
