package test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/translog"
	"golang.org/x/crypto/ocsp"
)

// TestMigrateToEtcd: a CA that issued and revoked on its bbolt file is
// moved into etcd with agentca migrate (refused while the daemon runs),
// then serves from etcd: the revocation holds in OCSP, a spent join token
// stays spent, an unspent one works, the issuance log goes on from where
// it was (consistent with the tree heads clients got before), and a
// second replica can join.
func TestMigrateToEtcd(t *testing.T) {
	ca := newCA(t, caOptions{})
	ca.start()
	hc := ca.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	toks := logE2ETokens(t, ca, "spiffe://example.org/agent/migrated", 4)
	before := []*logE2EIssued{etcdSign(t, hc, ca, toks[0]), etcdSign(t, hc, ca, toks[1])}
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", before[0].leaf.SerialNumber.Text(16), "--reason", "keyCompromise")

	cluster := etcdtest.New(t, 3)
	eps := strings.Join(cluster.Endpoints(), ",")
	if r := runCLI(t, "migrate", "--dir", ca.Dir, "--etcd-endpoints", eps, "--etcd-prefix", "/mig"); r.code != 1 || !strings.Contains(r.stderr, "stop agentca serve") {
		t.Fatalf("migrate while the daemon runs: %s", r)
	}
	ca.stop()
	cfgBefore, err := os.ReadFile(filepath.Join(ca.Dir, "agentca.json"))
	if err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, "migrate", "--dir", ca.Dir, "--etcd-endpoints", eps, "--etcd-prefix", "/mig")
	for _, want := range []string{"(1 revoked)", "audited", "now uses etcd", "agentca.json.bbolt"} {
		if !strings.Contains(res.stdout, want) {
			t.Fatalf("migrate output lacks %q:\n%s", want, res)
		}
	}
	if backup, err := os.ReadFile(filepath.Join(ca.Dir, "agentca.json.bbolt")); err != nil || string(backup) != string(cfgBefore) {
		t.Fatalf("the previous agentca.json was not kept (%v)", err)
	}
	// Only the storage section changed; the file keeps its mode.
	cfgAfter, err := os.ReadFile(filepath.Join(ca.Dir, "agentca.json"))
	if err != nil {
		t.Fatal(err)
	}
	var was, is map[string]any
	if err := json.Unmarshal(cfgBefore, &was); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cfgAfter, &is); err != nil {
		t.Fatal(err)
	}
	if st := is["storage"].(map[string]any); st["type"] != "etcd" || st["prefix"] != "/mig" {
		t.Fatalf("agentca.json storage after migrate: %v", st)
	}
	delete(was, "storage")
	delete(is, "storage")
	if !reflect.DeepEqual(was, is) {
		t.Fatalf("migrate changed agentca.json beyond its storage section:\nbefore %v\nafter  %v", was, is)
	}
	if fi, err := os.Stat(filepath.Join(ca.Dir, "agentca.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agentca.json mode after migrate: %v, %v", fi.Mode(), err)
	}
	if r := runCLI(t, "migrate", "--dir", ca.Dir, "--etcd-endpoints", eps, "--etcd-prefix", "/mig2"); r.code != 1 || !strings.Contains(r.stderr, "already keeps the CA in etcd") {
		t.Fatalf("migrating twice: %s", r)
	}

	ca.start()
	issuer := etcdIssuerOf(t, before[1])
	for i, want := range []int{ocsp.Revoked, ocsp.Good} {
		resp, err := etcdOCSP(hc, ca, before[i].leaf, issuer)
		if err != nil || resp.Status != want {
			t.Fatalf("OCSP of certificate %d after the migration: %+v, %v; want status %d", i, resp, err, want)
		}
	}
	if _, err := logE2ESign(hc, ca, toks[0], csrPEM(t, newECKey(t), &x509.CertificateRequest{})); err == nil || !strings.Contains(err.Error(), "status 401") {
		t.Fatalf("a join token spent before the migration: %v, want 401", err)
	}
	after := etcdSign(t, hc, ca, toks[2])
	if after.log.Index <= before[1].log.Index {
		t.Fatalf("the log restarted: index %d after the migration, %d before", after.log.Index, before[1].log.Index)
	}

	// A second replica on the same prefix serves the same CA.
	second := ca.replica("replica")
	second.start()
	viaSecond := etcdSign(t, hc, second, toks[3])
	if resp, err := etcdOCSP(hc, second, before[0].leaf, issuer); err != nil || resp.Status != ocsp.Revoked {
		t.Fatalf("the second replica's OCSP of the revoked certificate: %+v, %v", resp, err)
	}

	// Every tree head a client got, before and after, is consistent with
	// the log in etcd, and the log audit agrees.
	st, err := etcd.Open(context.Background(), etcd.Options{Endpoints: cluster.Endpoints(), Prefix: "/mig"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	final, err := st.TreeHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	logKey, _ := logPublicKey(t, ca.Dir)
	if err := translog.VerifySTH(logKey, final); err != nil {
		t.Fatal(err)
	}
	etcdConsistent(t, st, logKey, final, append(before, after, viaSecond))
	if audit := mustRun(t, "log", "audit", "--dir", ca.Dir); !strings.Contains(audit.stdout, "OK") {
		t.Fatalf("log audit after the migration:\n%s", audit)
	}
	if r := do(t, hc, http.MethodGet, second.URL+"/v1/roots", "", nil); r.status != http.StatusOK {
		t.Fatalf("roots from the second replica: %d", r.status)
	}
}
