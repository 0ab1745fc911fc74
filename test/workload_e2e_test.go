package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

// wlUser is a local user a workload runs as.
type wlUser struct {
	name     string
	uid, gid uint32
}

// testUser creates (once per machine) a system user for workload tests.
func testUser(t *testing.T, name string) wlUser {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "already exists") {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return wlUser{name: name, uid: uint32(uid), gid: uint32(gid)}
}

// sharedDir is a new directory every user may use (t.TempDir is 0700).
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "agentca-wl-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// buildTool builds a Go main package into dir.
func buildTool(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// asUser runs bin with args as u and returns its stdout.
func asUser(t *testing.T, u wlUser, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v as %s: %v\nstderr: %s", bin, args, u.name, err, stderr.String())
	}
	return stdout.String()
}

// TestWorkloadAPI runs `agentca serve` and `agentca agent`, and go-spiffe
// clients under three uids against the agent's socket.
func TestWorkloadAPI(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create users and run workloads under their uids")
	}
	t.Parallel()
	users := [3]wlUser{testUser(t, "agentca-wl-a"), testUser(t, "agentca-wl-b"), testUser(t, "agentca-wl-c")}
	shared := sharedDir(t)
	client := buildTool(t, shared, "github.com/agentca/agentca/test/wlclient", "wlclient")

	ca := newCA(t, caOptions{leaf: map[string]string{"min_ttl": "2s"}})
	ca.start()
	uid := func(u wlUser) string { return "unix:uid:" + strconv.Itoa(int(u.uid)) }
	// a: a template over the caller's user name, for nodes under /node/;
	// b: a fixed ID for nodes of the join provisioner; c: only for
	// another node.
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "a", "--spiffe-id", "spiffe://example.org/svc/{{unix:user}}",
		"--selector", uid(users[0]), "--node", "spiffe://example.org/node/*", "--ttl", "6s")
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "b", "--spiffe-id", "spiffe://example.org/svc/b",
		"--selector", uid(users[1]), "--selector", "unix:group:"+groupName(t, users[1].gid), "--node-provisioner", "join", "--ttl", "6s")
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "c", "--spiffe-id", "spiffe://example.org/svc/c",
		"--selector", uid(users[2]), "--node", "spiffe://example.org/othernode")
	// c-cond: the join provisioner's nodes, but only one whose attested
	// claims name another node ID; n1's do not, so users[2] still gets
	// nothing.
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "c-cond", "--spiffe-id", "spiffe://example.org/svc/c-cond",
		"--selector", uid(users[2]), "--node-provisioner", "join", "--node-condition", `claims["spiffe_id"] == "spiffe://example.org/node/n2"`)
	if r := runCLI(t, "workloads", "create", "--dir", ca.Dir, "--spiffe-id", "spiffe://example.org/x", "--selector", uid(users[0]),
		"--node-condition", `claims["spiffe_id"] ==`); r.code != 1 || !strings.Contains(r.stderr, "node_condition") {
		t.Errorf("a node condition that does not compile: want exit 1 naming node_condition\n%s", r)
	} else {
		oneLine(t, r)
	}
	// A definition the CA refuses: exit 1, one line.
	bad := runCLI(t, "workloads", "create", "--dir", ca.Dir, "--spiffe-id", "spiffe://other.org/x", "--selector", uid(users[0]), "--node-provisioner", "join")
	if bad.code != 1 {
		t.Errorf("a definition outside the trust domain: want exit 1\n%s", bad)
	}
	oneLine(t, bad)
	var set struct {
		Definitions []struct{ ID string } `json:"definitions"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "workloads", "list", "--dir", ca.Dir, "--json").stdout), &set); err != nil || len(set.Definitions) != 4 {
		t.Fatalf("workloads list: %+v %v", set, err)
	}

	// The node agent attests once with a join token.
	dataDir := filepath.Join(t.TempDir(), "node")
	tokFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokFile, []byte(ca.token("spiffe://example.org/node/n1")+"\n"))
	sock := filepath.Join(shared, "agent.sock")
	startNodeAgent := func(n int) *proc {
		p := startProc(t, "agentca agent", filepath.Join(t.TempDir(), "agent.log"), "agent", "--ca", ca.URL, "--root", ca.rootsFile(),
			"--token-file", tokFile, "--data-dir", dataDir, "--socket", sock, "--poll-interval", "200ms", "--ttl", "6s")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("agentca agent (start %d) log:\n%s", n, p.log())
			}
		})
		eventually(t, 20*time.Second, 50*time.Millisecond, "the agent's socket", func() bool {
			fi, err := os.Stat(sock)
			return err == nil && fi.Mode().Type() == os.ModeSocket && !p.exited()
		})
		return p
	}
	agentProc := startNodeAgent(1)
	sockURL := "unix://" + sock

	// Each uid gets its own SVID; the third none.
	outs := [3]string{sharedDir(t), sharedDir(t), sharedDir(t)}
	wantIDs := [3]string{"svid spiffe://example.org/svc/agentca-wl-a", "svid spiffe://example.org/svc/b", "error PermissionDenied"}
	for i, u := range users {
		got := strings.TrimSpace(asUser(t, u, client, "-socket", sockURL, "fetch", outs[i]))
		if got != wantIDs[i] {
			t.Errorf("uid %d (%s): got %q, want %q", u.uid, u.name, got, wantIDs[i])
		}
	}
	// The SVIDs verify against the bundle with openssl.
	for i := range 2 {
		svid, bundle := filepath.Join(outs[i], "svid.pem"), filepath.Join(outs[i], "bundle.pem")
		out, err := exec.Command("openssl", "verify", "-CAfile", bundle, "-untrusted", svid, svid).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify of %s's SVID: %v\n%s", users[i].name, err, out)
		}
	}

	// A renewal arrives on the stream before the SVID expires.
	watch := asUser(t, users[0], client, "-socket", sockURL, "-timeout", "20s", "watch", "2")
	type update struct {
		IDs      []string  `json:"ids"`
		Serials  []string  `json:"serials"`
		NotAfter time.Time `json:"not_after"`
		At       time.Time `json:"at"`
	}
	var ups []update
	sc := bufio.NewScanner(strings.NewReader(watch))
	for sc.Scan() {
		var u update
		if err := json.Unmarshal(sc.Bytes(), &u); err != nil {
			t.Fatalf("watch line %q: %v", sc.Text(), err)
		}
		ups = append(ups, u)
	}
	if len(ups) != 2 || ups[0].Serials[0] == ups[1].Serials[0] || !ups[1].At.Before(ups[0].NotAfter) {
		t.Fatalf("want two SVIDs, the second before the first expired: %s", watch)
	}

	// Envoy SDS v3: the certificate by SPIFFE ID and as "default", the
	// bundle as ROOTCA; after the ACK, a push on renewal.
	sdsOut := asUser(t, users[0], client, "-socket", sockURL, "-timeout", "20s", "sds", "2")
	type sdsLine struct {
		Version   string   `json:"version"`
		Names     []string `json:"names"`
		Serial    string   `json:"serial"`
		TrustedCA string   `json:"trusted_ca"`
	}
	var sdsLines []sdsLine
	for _, l := range strings.Split(strings.TrimSpace(sdsOut), "\n") {
		var v sdsLine
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("sds line %q: %v", l, err)
		}
		sdsLines = append(sdsLines, v)
	}
	wantNames := "spiffe://example.org/svc/agentca-wl-a default ROOTCA"
	if len(sdsLines) != 2 || strings.Join(sdsLines[0].Names, " ") != wantNames || sdsLines[0].Serial == sdsLines[1].Serial ||
		sdsLines[0].Version == sdsLines[1].Version || sdsLines[0].Serial == "" {
		t.Errorf("SDS: want %s, then a push with a new serial:\n%s", wantNames, sdsOut)
	}
	if len(sdsLines) > 0 && !bytes.Equal(parseCerts(t, []byte(sdsLines[0].TrustedCA))[0].Raw, ca.Roots[0].Raw) {
		t.Error("SDS: ROOTCA is not the CA's root")
	}
	if got := strings.TrimSpace(asUser(t, users[2], client, "-socket", sockURL, "sds", "1")); got != `{"error":"PermissionDenied"}` {
		t.Errorf("SDS for a caller without identity: %s", got)
	}

	// Two go-spiffe services keep mTLS through three rotations on each
	// side, with a new handshake every 100 ms and not one failing.
	server := exec.Command(client, "-socket", sockURL, "-timeout", "40s", "serve", "spiffe://example.org/svc/b")
	server.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: users[0].uid, Gid: users[0].gid}}
	serverOut, err := server.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	}()
	first, err := bufio.NewReader(serverOut).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(first), "listening ")
	if err != nil || !ok {
		t.Fatalf("the mTLS server said %q (%v)", first, err)
	}
	callOut := asUser(t, users[1], client, "-socket", sockURL, "-timeout", "13s", "call", addr+"=spiffe://example.org/svc/agentca-wl-a")
	var calls struct {
		OK, Failed              int
		OwnSerials, PeerSerials []string
	}
	if err := json.Unmarshal([]byte(callOut), &calls); err != nil {
		t.Fatalf("call output %q: %v", callOut, err)
	}
	if calls.Failed != 0 || calls.OK == 0 || len(calls.OwnSerials) < 4 || len(calls.PeerSerials) < 4 {
		t.Errorf("mTLS through rotations: want no failure and at least 4 certificates on each side: %s", callOut)
	}

	// grpcurl without the security header: InvalidArgument.
	grpcurl := installGrpcurl(t)
	proto := workloadProtoDir(t)
	out, _ := exec.Command(grpcurl, "-plaintext", "-import-path", proto, "-proto", "workload.proto",
		"unix://"+sock, "SpiffeWorkloadAPI/FetchX509SVID").CombinedOutput()
	if !strings.Contains(string(out), "InvalidArgument") {
		t.Errorf("grpcurl without the header: want InvalidArgument, got:\n%s", out)
	}
	// With it, root (no definition) is refused.
	out, _ = exec.Command(grpcurl, "-plaintext", "-import-path", proto, "-proto", "workload.proto",
		"-H", "workload.spiffe.io: true", "unix://"+sock, "SpiffeWorkloadAPI/FetchX509SVID").CombinedOutput()
	if !strings.Contains(string(out), "PermissionDenied") {
		t.Errorf("grpcurl as root: want PermissionDenied, got:\n%s", out)
	}

	// The node cannot get c's identity even asking the CA directly.
	node := loadTLS(t, dataDir)
	key := newECKey(t)
	r := postJSON(t, ca.client(node), ca.URL+"/v1/workload/sign", map[string]any{
		"spiffe_id": "spiffe://example.org/svc/c", "selectors": []string{uid(users[2])}, "csr": csrPEM(t, key, nil)})
	wantError(t, r, http.StatusForbidden, "workload_not_allowed")
	// Nor one whose node condition is false over this node's claims.
	r = postJSON(t, ca.client(node), ca.URL+"/v1/workload/sign", map[string]any{
		"spiffe_id": "spiffe://example.org/svc/c-cond", "selectors": []string{uid(users[2])}, "csr": csrPEM(t, key, nil)})
	wantError(t, r, http.StatusForbidden, "workload_not_allowed")

	// A restart resumes from --data-dir: the join token is spent, so
	// attesting again would fail.
	agentProc.stop(t)
	startNodeAgent(2) // stopped by its cleanup
	if got := strings.TrimSpace(asUser(t, users[1], client, "-socket", sockURL, "fetch", outs[1])); got != wantIDs[1] {
		t.Fatalf("after a restart: %q", got)
	}

	// A caller without identity keeps asking (go-spiffe retries after
	// PermissionDenied) and gets one within seconds of a definition
	// created on the CA.
	cWatch := exec.Command(client, "-socket", sockURL, "-timeout", "20s", "watch", "1")
	cWatch.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: users[2].uid, Gid: users[2].gid}}
	var cOut bytes.Buffer
	cWatch.Stdout, cWatch.Stderr = &cOut, &cOut
	if err := cWatch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	created := time.Now()
	mustRun(t, "workloads", "create", "--dir", ca.Dir, "--id", "c2", "--spiffe-id", "spiffe://example.org/svc/c2",
		"--selector", uid(users[2]), "--node-provisioner", "join")
	if err := cWatch.Wait(); err != nil || !strings.Contains(cOut.String(), `"ids":["spiffe://example.org/svc/c2"]`) {
		t.Errorf("a new definition did not reach the waiting caller (%v):\n%s", err, cOut.String())
	} else if d := time.Since(created); d > 10*time.Second {
		t.Errorf("a new definition took %s to reach the caller", d)
	}

	// An anchor staged on the CA reaches the open stream (the node
	// refreshes the bundle at each renewal of its 6 s certificate).
	watcher := exec.Command(client, "-socket", sockURL, "-timeout", "25s", "roots", "2")
	watcher.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: users[1].uid, Gid: users[1].gid}}
	var watchOut bytes.Buffer
	watcher.Stdout, watcher.Stderr = &watchOut, &watchOut
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the first update, with one root
	mustRun(t, "anchors", "stage", "--dir", ca.Dir)
	if err := watcher.Wait(); err != nil || !strings.Contains(watchOut.String(), `"roots":1`) || !strings.Contains(watchOut.String(), `"roots":2`) {
		t.Errorf("the staged anchor did not reach the stream (%v):\n%s", err, watchOut.String())
	}

	// Revoking the node revokes its workloads' SVIDs. A fresh one: the
	// SVID fetched before the anchor step may have expired by now, and an
	// expired certificate is not revoked (OCSP keeps saying good).
	asUser(t, users[1], client, "-socket", sockURL, "fetch", outs[1])
	svidB := parseCerts(t, mustRead(t, filepath.Join(outs[1], "svid.pem")))
	nodeLeaf := node.Leaf
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", nodeLeaf.SerialNumber.Text(16))
	if st := ocspAt(t, "http://"+ca.HTTP, svidB[0], svidB[1]); st != xocsp.Revoked {
		t.Errorf("OCSP for the revoked node's workload SVID: status %d, want revoked", st)
	}
}

func groupName(t *testing.T, gid uint32) string {
	t.Helper()
	g, err := user.LookupGroupId(strconv.Itoa(int(gid)))
	if err != nil {
		t.Fatal(err)
	}
	return g.Name
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadTLS reads DIR/cert.pem and DIR/key.pem.
func loadTLS(t *testing.T, dir string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func ocspAt(t *testing.T, base string, leaf, issuer *x509.Certificate) int {
	t.Helper()
	req, err := xocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r, err := xocsp.ParseResponseForCert(b, leaf, issuer)
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	return r.Status
}

// installGrpcurl installs grpcurl into a temporary GOBIN.
func installGrpcurl(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3")
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installing grpcurl: %v\n%s", err, out)
	}
	return filepath.Join(bin, "grpcurl")
}

// workloadProtoDir is the directory of go-spiffe's workload.proto.
func workloadProtoDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/spiffe/go-spiffe/v2").Output()
	if err != nil {
		t.Fatalf("go list go-spiffe: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "proto", "spiffe", "workload")
}
