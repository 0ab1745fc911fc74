package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store/etcd/etcdtest"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdKeys is a copy of every key under a prefix.
type etcdKeys []*mvccpb.KeyValue

func etcdDump(t *testing.T, cli *clientv3.Client, prefix string) etcdKeys {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Kvs
}

// etcdRestore replaces everything under prefix with keys.
func etcdRestore(t *testing.T, cli *clientv3.Client, prefix string, keys etcdKeys) {
	t.Helper()
	ctx := context.Background()
	if _, err := cli.Delete(ctx, prefix+"/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	for _, kv := range keys {
		if _, err := cli.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEtcdStoreRefusals: on etcd, a deleted prefix, another CA's prefix
// and a prefix rolled back to an older copy are refused with one line by
// serve (and log audit, store check), nothing is written to them, and
// --accept-rollback starts with an audit line; the revoked certificate is
// revoked when the CA's keys come back.
func TestEtcdStoreRefusals(t *testing.T) {
	cluster := etcdtest.New(t, 1)
	eps := strings.Join(cluster.Endpoints(), ",")
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	base := t.TempDir()
	ca := &testCA{t: t, base: base, Dir: filepath.Join(base, "ca"), HTTPS: freeAddr(t), HTTP: freeAddr(t), TrustDomain: "example.org"}
	ca.URL = "https://" + ca.HTTPS
	mustRun(t, "init", "--dir", ca.Dir, "--trust-domain", ca.TrustDomain, "--https", ca.HTTPS, "--http", ca.HTTP,
		"--storage", "etcd", "--etcd-endpoints", eps, "--etcd-prefix", "/a")
	if ca.RootsPEM, err = os.ReadFile(ca.rootsFile()); err != nil {
		t.Fatal(err)
	}
	ca.Roots = parseCerts(t, ca.RootsPEM)
	ca.start()
	hc := ca.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	toks := logE2ETokens(t, ca, "spiffe://example.org/agent/store", 2)
	revoked := etcdSign(t, hc, ca, toks[0]).leaf.SerialNumber.Text(16)
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", revoked, "--reason", "keyCompromise")
	ca.stop()
	old := etcdDump(t, cli, "/a")
	ca.start()
	etcdSign(t, hc, ca, toks[1])
	backup := filepath.Join(base, "backup.etcd")
	mustRun(t, "backup", "--dir", ca.Dir, "--out", backup)
	ca.stop()

	// Rolled back to the older copy.
	etcdRestore(t, cli, "/a", old)
	refused(t, "was rolled back", "serve", "--dir", ca.Dir)
	refused(t, "rolled back", "store", "check", "--dir", ca.Dir)

	// Deleted: refused, and nothing is written under the prefix.
	etcdRestore(t, cli, "/a", nil)
	for _, cmd := range [][]string{{"serve"}, {"log", "audit"}, {"store", "check"}} {
		refused(t, "is empty", append(cmd, "--dir", ca.Dir)...)
		if n := len(etcdDump(t, cli, "/a")); n != 0 {
			t.Fatalf("%v wrote %d keys under the deleted prefix", cmd, n)
		}
	}

	// Another CA's prefix.
	mustRun(t, "init", "--dir", filepath.Join(base, "other"), "--trust-domain", "other.org",
		"--storage", "etcd", "--etcd-endpoints", eps, "--etcd-prefix", "/b")
	ca.editConfig(func(cfg map[string]any) { cfg["storage"].(map[string]any)["prefix"] = "/b" })
	for _, cmd := range [][]string{{"serve"}, {"log", "audit"}} {
		refused(t, "belongs to another CA", append(cmd, "--dir", ca.Dir)...)
	}
	ca.editConfig(func(cfg map[string]any) { cfg["storage"].(map[string]any)["prefix"] = "/a" })

	// The backup, through store restore (only into an empty prefix):
	// the revocation holds.
	etcdRestore(t, cli, "/a", old)
	refused(t, "empty prefix", "store", "restore", "--dir", ca.Dir, "--from", backup)
	etcdRestore(t, cli, "/a", nil)
	mustRun(t, "store", "restore", "--dir", ca.Dir, "--from", backup)
	mustRun(t, "store", "check", "--dir", ca.Dir)
	ca.start()
	for _, c := range ca.certs("spiffe://example.org/agent/store") {
		if normSerial(t, c.Serial) == normSerial(t, revoked) && !c.Revoked {
			t.Fatalf("certificate %s is no longer revoked", revoked)
		}
	}
	ca.stop()

	// The older copy, accepted.
	etcdRestore(t, cli, "/a", old)
	p := startProc(t, "agentca serve", filepath.Join(base, "accept.log"), "serve", "--dir", ca.Dir, "--accept-rollback")
	eventually(t, 30*time.Second, 50*time.Millisecond, "the accepting start to serve", func() bool {
		return strings.Contains(p.log(), "msg=serving") || p.exited()
	})
	if !strings.Contains(p.log(), "accept_rollback") {
		t.Fatalf("no audit line for the accepted rollback:\n%s", p.log())
	}
	p.stop(t)
	// The accepted state is the reference now.
	ca.start()
	ca.stop()
}
