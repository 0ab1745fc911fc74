package test

// End-to-end tests of replicas on etcd (issue 9): real `agentca serve`
// processes sharing one in-process etcd cluster (store/etcd/etcdtest) and
// the same CA keys (a copied state directory).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/etcd"
	"github.com/agentca/agentca/store/etcd/etcdtest"
	"github.com/agentca/agentca/store/logaudit"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
	ct "github.com/google/certificate-transparency-go"
	"golang.org/x/crypto/ocsp"
)

const etcdPrefix = "/e2e"

// etcdReplicas is a CA on a 3-member etcd cluster served by several
// replicas, each with its own state directory (a copy of the first) and
// ports.
type etcdReplicas struct {
	cluster *etcdtest.Cluster
	cas     []*testCA
}

// newEtcdReplicas runs agentca init --storage etcd, copies the state
// directory for each further replica, and starts them one after the
// other.
func newEtcdReplicas(t *testing.T, n int) *etcdReplicas {
	t.Helper()
	r := &etcdReplicas{cluster: etcdtest.New(t, 3)}
	r.cas = startEtcdReplicas(t, n, r.cluster.Endpoints())
	return r
}

// startEtcdReplicas inits a CA on the etcd cluster at endpoints and starts
// n replicas of it.
func startEtcdReplicas(t *testing.T, n int, endpoints []string) []*testCA {
	t.Helper()
	var cas []*testCA
	base := t.TempDir()
	first := &testCA{t: t, base: base, Dir: filepath.Join(base, "ca0"), HTTPS: freeAddr(t), HTTP: freeAddr(t), TrustDomain: "example.org"}
	first.URL = "https://" + first.HTTPS
	res := mustRun(t, "init", "--dir", first.Dir, "--trust-domain", first.TrustDomain, "--https", first.HTTPS, "--http", first.HTTP,
		"--storage", "etcd", "--etcd-endpoints", strings.Join(endpoints, ","), "--etcd-prefix", etcdPrefix)
	if m := fingerprintLine.FindStringSubmatch(res.stdout); m != nil {
		first.Fingerprint = m[1]
	}
	if _, err := os.Stat(filepath.Join(first.Dir, "agentca.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("init --storage etcd made a bbolt file (%v)", err)
	}
	first.editConfig(func(cfg map[string]any) {
		st := cfg["storage"].(map[string]any)
		if st["type"] != "etcd" || st["prefix"] != etcdPrefix {
			t.Fatalf("agentca.json storage = %v", st)
		}
		// Short enough that a lost quorum answers well inside the
		// client's patience; batches as large as the test cluster
		// allows.
		st["request_timeout"] = "2s"
		st["max_txn_ops"] = 1024
	})
	var err error
	if first.RootsPEM, err = os.ReadFile(first.rootsFile()); err != nil {
		t.Fatal(err)
	}
	first.Roots = parseCerts(t, first.RootsPEM)
	cas = append(cas, first)
	for i := 1; i < n; i++ {
		cas = append(cas, first.replica(fmt.Sprintf("ca%d", i)))
	}
	for _, c := range cas {
		c.start()
	}
	return cas
}

// replica is another replica of c (on etcd storage): a copy of its state
// directory, in c.base/name, with its own ports. It is not started.
func (c *testCA) replica(name string) *testCA {
	r := &testCA{t: c.t, base: c.base, Dir: filepath.Join(c.base, name), HTTPS: freeAddr(c.t), HTTP: freeAddr(c.t),
		TrustDomain: c.TrustDomain, RootsPEM: c.RootsPEM, Roots: c.Roots, Fingerprint: c.Fingerprint}
	r.URL = "https://" + r.HTTPS
	etcdCopyTree(c.t, c.Dir, r.Dir)
	r.editConfig(func(cfg map[string]any) {
		cfg["listen"] = map[string]any{"https": r.HTTPS, "http": r.HTTP}
		cfg["public_urls"] = map[string]any{"https": r.URL, "http": "http://" + r.HTTP}
	})
	return r
}

// etcdCopyTree copies the regular files and directories under src to dst,
// keeping their modes (the keys stay 0600).
func etcdCopyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
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
		return nil // the admin socket
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openEtcdStore opens the replicas' store in the test process (the
// members given by live).
func (r *etcdReplicas) openStore(t *testing.T, live ...int) *etcd.Store {
	t.Helper()
	var eps []string
	for _, i := range live {
		eps = append(eps, r.cluster.Endpoints()[i])
	}
	s, err := etcd.Open(context.Background(), etcd.Options{Endpoints: eps, Prefix: etcdPrefix, MaxTxnOps: 1024})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// etcdGetSTH fetches c's get-sth.
func etcdGetSTH(hc *http.Client, c *testCA) (*ct.GetSTHResponse, error) {
	r, err := tryDo(hc, http.MethodGet, "http://"+c.HTTP+"/ct/v1/get-sth", "", nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("get-sth: %d %s", r.status, r.body)
	}
	var sth ct.GetSTHResponse
	if err := json.Unmarshal(r.body, &sth); err != nil {
		return nil, err
	}
	return &sth, nil
}

// etcdOCSP asks c's responder about leaf over POST /ocsp.
func etcdOCSP(hc *http.Client, c *testCA, leaf, issuer *x509.Certificate) (*ocsp.Response, error) {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, err
	}
	r, err := tryDo(hc, http.MethodPost, "http://"+c.HTTP+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("POST /ocsp: %d %s", r.status, r.body)
	}
	return ocsp.ParseResponseForCert(r.body, leaf, issuer)
}

// etcdCRLHas reports whether c's CRL lists serial.
func etcdCRLHas(hc *http.Client, c *testCA, issuer *x509.Certificate, serial string) (bool, error) {
	r, err := tryDo(hc, http.MethodGet, "http://"+c.HTTP+"/crl", "", nil)
	if err != nil {
		return false, err
	}
	rl, err := x509.ParseRevocationList(r.body)
	if err != nil {
		return false, err
	}
	if err := rl.CheckSignatureFrom(issuer); err != nil {
		return false, err
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Text(16) == serial {
			return true, nil
		}
	}
	return false, nil
}

// etcdSign enrolls with tok through c and returns the leaf and its issuer.
func etcdSign(t *testing.T, hc *http.Client, c *testCA, tok string) *logE2EIssued {
	t.Helper()
	is, err := logE2ESign(hc, c, tok, csrPEM(t, newECKey(t), &x509.CertificateRequest{}))
	if err != nil {
		t.Fatalf("sign through %s: %v", c.URL, err)
	}
	return is
}

func etcdIssuerOf(t *testing.T, is *logE2EIssued) *x509.Certificate {
	t.Helper()
	certs := parseCerts(t, []byte(is.pem))
	if len(certs) < 2 {
		t.Fatal("no issuing CA in the chain")
	}
	return certs[1]
}

// TestEtcdReplicas: two replicas on one 3-member cluster issue, share
// join tokens (one certificate per token whichever replica is asked),
// follow each other's revocations within a second, serve the same signed
// tree head for a size with proofs that hold across them, and, once the
// cluster loses its quorum, refuse issuance with a 503 JSON error while
// OCSP keeps answering from its cache.
func TestEtcdReplicas(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	hc := a.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	id := "spiffe://example.org/agent/replica"
	toks := logE2ETokens(t, a, id, 8)

	// Issuance through both, with tokens made through A's admin socket.
	viaB := etcdSign(t, hc, b, toks[0])
	viaA := etcdSign(t, hc, a, toks[1])
	if viaA.log.Index == viaB.log.Index {
		t.Fatalf("both replicas logged at index %d", viaA.log.Index)
	}

	// One token sent to both replicas at once: exactly one certificate.
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for i := range 8 {
		c := reps.cas[i%2]
		wg.Go(func() {
			b, _ := json.Marshal(signBody("join", toks[2], csrPEM(t, newECKey(t), &x509.CertificateRequest{}), ""))
			r, err := tryDo(hc, http.MethodPost, c.URL+"/v1/sign", "application/json", bytes.NewReader(b))
			switch {
			case err != nil:
				t.Errorf("sign: %v", err)
			case r.status == http.StatusCreated:
				ok.Add(1)
			case r.status == http.StatusUnauthorized:
				refused.Add(1)
			default:
				t.Errorf("sign with a shared token: %d %s", r.status, r.body)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || refused.Load() != 7 {
		t.Fatalf("one token sent 8 times to two replicas: %d certificates, %d refusals; want 1 and 7", ok.Load(), refused.Load())
	}

	// The same signed tree head for a size on both, and proofs across.
	lcA, logKey, _ := logE2EClient(t, a)
	lcB, _, _ := logE2EClient(t, b)
	var sthA, sthB *ct.GetSTHResponse
	eventually(t, 5*time.Second, 20*time.Millisecond, "both replicas to serve one tree head", func() bool {
		var errA, errB error
		sthA, errA = etcdGetSTH(hc, a)
		sthB, errB = etcdGetSTH(hc, b)
		return errA == nil && errB == nil && sthA.TreeSize == sthB.TreeSize && sthA.TreeSize >= viaA.log.Index+1
	})
	ja, _ := json.Marshal(sthA)
	jb, _ := json.Marshal(sthB)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("two tree heads for size %d:\nA %s\nB %s", sthA.TreeSize, ja, jb)
	}
	earlier, err := sthB.ToSignedTreeHead()
	if err != nil {
		t.Fatal(err)
	}
	if err := translog.VerifySTH(logKey, earlier); err != nil {
		t.Fatal(err)
	}
	later := etcdSign(t, hc, b, toks[3])
	ctx := context.Background()
	// A's latest tree head covers B's newest certificate, is consistent
	// with the one B served before, and proves B's inclusion.
	var now *ct.SignedTreeHead
	eventually(t, 5*time.Second, 20*time.Millisecond, "A's tree head to cover B's certificate", func() bool {
		now, err = lcA.GetSTH(ctx)
		return err == nil && now.TreeSize > later.log.Index
	})
	if err := logE2EConsistent(ctx, lcA, earlier, now); err != nil {
		t.Fatalf("A's tree head %d is not consistent with B's %d: %v", now.TreeSize, earlier.TreeSize, err)
	}
	if err := logE2EProve(ctx, lcA, now, later); err != nil {
		t.Fatalf("A cannot prove B's certificate: %v", err)
	}
	if sth, err := lcB.GetSTH(ctx); err != nil || (sth.TreeSize == now.TreeSize && sth.SHA256RootHash != now.SHA256RootHash) {
		t.Fatalf("B's tree head %+v, %v", sth, err)
	}

	// A revocation through A shows in B's OCSP and CRL within a second.
	issuer := etcdIssuerOf(t, viaB)
	if resp, err := etcdOCSP(hc, b, viaB.leaf, issuer); err != nil || resp.Status != ocsp.Good {
		t.Fatalf("B's OCSP before the revocation: %+v, %v", resp, err) // and now cached by B
	}
	mustRun(t, "revoke", "--dir", a.Dir, "--serial", viaB.leaf.SerialNumber.Text(16), "--reason", "keyCompromise")
	revoked := time.Now()
	serial := viaB.leaf.SerialNumber.Text(16)
	var seenOCSP, seenCRL time.Duration
	for seenOCSP == 0 || seenCRL == 0 {
		if seenOCSP == 0 {
			if resp, err := etcdOCSP(hc, b, viaB.leaf, issuer); err == nil && resp.Status == ocsp.Revoked {
				seenOCSP = time.Since(revoked)
			}
		}
		if seenCRL == 0 {
			if in, err := etcdCRLHas(hc, b, issuer, serial); err == nil && in {
				seenCRL = time.Since(revoked)
			}
		}
		if time.Since(revoked) > 5*time.Second {
			t.Fatalf("B never saw the revocation made through A (OCSP after %s, CRL after %s)", seenOCSP, seenCRL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revocation through A seen by B's OCSP after %s, CRL after %s", seenOCSP, seenCRL)
	if seenOCSP > time.Second || seenCRL > time.Second {
		t.Errorf("B saw the revocation after %s (OCSP) and %s (CRL), want within 1s", seenOCSP, seenCRL)
	}

	// agentca log audit on etcd runs beside the serving replicas, while
	// they issue.
	var auditWG sync.WaitGroup
	for _, tok := range toks[6:8] {
		csr := csrPEM(t, newECKey(t), &x509.CertificateRequest{})
		auditWG.Go(func() {
			if _, err := logE2ESign(hc, b, tok, csr); err != nil {
				t.Errorf("sign during the audit: %v", err)
			}
		})
	}
	audit := mustRun(t, "log", "audit", "--dir", a.Dir)
	auditWG.Wait()
	// The etcd store's counts are exported: B has committed writes.
	if r, err := tryDo(hc, http.MethodGet, "http://"+b.HTTP+"/metrics", "", nil); err != nil || r.status != http.StatusOK {
		t.Fatalf("B's metrics: %v", err)
	} else {
		for _, name := range []string{"agentca_etcd_commits_total ", "agentca_etcd_conflicts_total ", "agentca_etcd_reads_total "} {
			i := strings.Index(string(r.body), "\n"+name)
			if i < 0 {
				t.Fatalf("B's metrics have no %s", name)
			}
			if name == "agentca_etcd_commits_total " && strings.HasPrefix(string(r.body[i+1+len(name):]), "0\n") {
				t.Fatal("B's metrics count no commit")
			}
		}
	}
	if !strings.Contains(audit.stdout, "OK: the entries, the stored tree") {
		t.Fatalf("log audit on the live etcd store:\n%s", audit)
	}
	if again := mustRun(t, "log", "audit", "--dir", b.Dir); !strings.Contains(again.stdout, "OK") {
		t.Fatalf("log audit after the issuances:\n%s", again)
	}

	// An anchor staged and activated through A: B publishes its root and
	// switches issuance to it within a second (B has the new keys, as an
	// operator deploys them to every replica).
	mustRun(t, "anchors", "stage", "--dir", a.Dir)
	staged := time.Now()
	var anchors []wire.AnchorStatus
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", a.Dir).stdout), &anchors); err != nil || len(anchors) != 2 {
		t.Fatalf("anchors list: %v %+v", err, anchors)
	}
	newAnchor := anchors[1]
	var roots []*x509.Certificate
	eventually(t, 5*time.Second, 10*time.Millisecond, "B to publish the staged root", func() bool {
		r, err := tryDo(hc, http.MethodGet, b.URL+"/v1/roots", "", nil)
		if err != nil || r.status != http.StatusOK {
			return false
		}
		roots, err = parseCertsErr(r.body)
		return err == nil && len(roots) == 2
	})
	if d := time.Since(staged); d > time.Second {
		t.Errorf("B published the root staged through A after %s, want within 1s", d)
	}
	etcdCopyTree(t, filepath.Join(a.Dir, "keys", "anchors"), filepath.Join(b.Dir, "keys", "anchors"))
	for _, c := range reps.cas {
		c.Roots = roots
	}
	hc.CloseIdleConnections()
	hc = a.client(nil)
	hc.Timeout = 15 * time.Second
	mustRun(t, "anchors", "activate", "--force", "--dir", a.Dir, newAnchor.ID)
	activated := time.Now()
	// B renews its HTTPS certificate under the new issuing CA when it
	// applies the activation.
	eventually(t, 5*time.Second, 10*time.Millisecond, "B to issue from the activated anchor", func() bool {
		conn, err := tls.Dial("tcp", b.HTTPS, &tls.Config{RootCAs: b.pool(), MinVersion: tls.VersionTLS12})
		if err != nil {
			return false
		}
		defer conn.Close()
		return fmt.Sprintf("%x", conn.ConnectionState().PeerCertificates[0].AuthorityKeyId) == newAnchor.IssuerSKI
	})
	if d := time.Since(activated); d > time.Second {
		t.Errorf("B switched to the anchor activated through A after %s, want within 1s", d)
	}
	if got := etcdSign(t, hc, b, toks[5]); fmt.Sprintf("%x", got.leaf.AuthorityKeyId) != newAnchor.IssuerSKI {
		t.Errorf("B issued under %x after the activation, want %s", got.leaf.AuthorityKeyId, newAnchor.IssuerSKI)
	}

	// Quorum lost: issuance is refused with 503 within a bounded time;
	// OCSP answers revoked from its cache (the response each replica
	// signed when it learnt of the revocation), but no longer a cached
	// good: a replica that cannot prove it has seen every revocation
	// (ocsp.max_staleness) answers tryLater rather than vouch for a
	// certificate the majority may have revoked meanwhile.
	for _, c := range []*testCA{a, b} {
		if resp, err := etcdOCSP(hc, c, viaA.leaf, etcdIssuerOf(t, viaA)); err != nil || resp.Status != ocsp.Good {
			t.Fatalf("OCSP from %s: %+v, %v", c.HTTP, resp, err)
		}
	}
	for _, c := range []*testCA{a, b} {
		if r := do(t, hc, http.MethodGet, "http://"+c.HTTP+"/ready", "", nil); r.status != http.StatusOK {
			t.Fatalf("%s /ready with quorum: %d %s", c.HTTP, r.status, r.body)
		}
	}
	reps.cluster.Stop(1)
	reps.cluster.Stop(2)
	for _, c := range []*testCA{a, b} {
		// The load balancer's check: 503 once the replica cannot
		// read etcd's current state.
		eventually(t, 5*time.Second, 50*time.Millisecond, c.HTTP+"/ready to answer 503 without quorum", func() bool {
			r, err := tryDo(hc, http.MethodGet, c.URL+"/ready", "", nil)
			return err == nil && r.status == http.StatusServiceUnavailable && strings.Contains(string(r.body), `"unavailable"`)
		})
		start := time.Now()
		r := postJSON(t, hc, c.URL+"/v1/sign", signBody("join", toks[4], csrPEM(t, newECKey(t), &x509.CertificateRequest{}), ""))
		wantError(t, r, http.StatusServiceUnavailable, "unavailable")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s answered the sign request without quorum after %s", c.URL, d)
		}
		for _, l := range []*logE2EIssued{viaA, viaB} {
			resp, err := etcdOCSP(hc, c, l.leaf, etcdIssuerOf(t, l))
			var re ocsp.ResponseError
			switch {
			case l == viaB && (err != nil || resp.Status != ocsp.Revoked):
				t.Errorf("OCSP from %s without quorum for the revoked certificate: %+v, %v; want revoked", c.HTTP, resp, err)
			case l == viaA && (!errors.As(err, &re) || re.Status != ocsp.TryLater):
				t.Errorf("OCSP from %s without quorum for a good certificate: %+v, %v; want tryLater", c.HTTP, resp, err)
			}
		}
		// A serial no one asked about cannot be looked up: tryLater.
		_, err := etcdOCSP(hc, c, later.leaf, etcdIssuerOf(t, later))
		var re ocsp.ResponseError
		if !errors.As(err, &re) || re.Status != ocsp.TryLater {
			t.Errorf("OCSP from %s without quorum for an uncached serial: %v, want tryLater", c.HTTP, err)
		}
	}
}

// TestEtcdFailover: with issuance running through both replicas, one
// replica and one etcd member stop; issuance goes on through the other
// replica, and afterwards no serial is duplicated, every certificate has
// its log entry (store/logaudit), and the log is consistent with every
// tree head a client received.
func TestEtcdFailover(t *testing.T) {
	reps := newEtcdReplicas(t, 2)
	a, b := reps.cas[0], reps.cas[1]
	const total = 1500
	toks := logE2ETokens(t, a, "spiffe://example.org/agent/load", total)
	hc := a.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	csr := csrPEM(t, newECKey(t), &x509.CertificateRequest{})

	var mu sync.Mutex
	var issued []*logE2EIssued
	afterDown := 0
	// failing: the failover started; down: replica B has exited and
	// member 0 has stopped.
	var failing, down atomic.Bool
	var bGone atomic.Bool // the balancer saw B fail
	next := make(chan string, total)
	for _, tok := range toks {
		next <- tok
	}
	close(next)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for tok := range next {
				mu.Lock()
				enough := afterDown >= 200
				mu.Unlock()
				if enough {
					return
				}
				// Keep the last tokens for after the failover, however
				// long stopping the member takes on a busy machine.
				for len(next) < total/4 && !down.Load() {
					time.Sleep(20 * time.Millisecond)
				}
				// A balancer: round robin, away from a replica that
				// is gone.
				c := reps.cas[w%2]
				wasDown := down.Load()
				if bGone.Load() {
					c = a
				}
				is, err := logE2ESign(hc, c, tok, csr)
				if err != nil {
					if failing.Load() && (c == b || strings.Contains(err.Error(), "status 503")) {
						if c == b {
							bGone.Store(true)
						}
						continue // B going away, or in flight while the member stopped: the token may be spent
					}
					t.Errorf("sign through %s: %v", c.URL, err)
					continue
				}
				mu.Lock()
				issued = append(issued, is)
				if wasDown {
					afterDown++
				}
				n := len(issued)
				mu.Unlock()
				if n == 100 && !failing.Swap(true) {
					go func() {
						var stops sync.WaitGroup
						stops.Go(func() { reps.cluster.Stop(0) })
						stops.Go(b.stop)
						stops.Wait()
						down.Store(true)
					}()
				}
			}
		})
	}
	wg.Wait()
	if !down.Load() {
		t.Fatal("the failover did not finish before the tokens ran out")
	}
	if afterDown < 200 {
		t.Fatalf("only %d certificates issued through the survivor after the failover, want at least 200", afterDown)
	}
	t.Logf("%d certificates issued, %d through A with B and one etcd member down", len(issued), afterDown)

	st := reps.openStore(t, 1, 2)
	ctx := context.Background()
	serials := map[string]bool{}
	for _, is := range issued {
		sn := is.leaf.SerialNumber.Text(16)
		if serials[sn] {
			t.Fatalf("serial %s issued twice", sn)
		}
		serials[sn] = true
		rec, err := st.Certificate(ctx, sn)
		if err != nil || !rec.Logged() || rec.LogIndex != is.log.Index || !bytes.Equal(rec.DER, is.leaf.Raw) {
			t.Fatalf("record of %s: %+v, %v; want logged at %d", sn, rec, err, is.log.Index)
		}
	}
	logKey, _ := logPublicKey(t, a.Dir)
	// A's final tree head, then the audit against it.
	var final *ct.SignedTreeHead
	eventually(t, 5*time.Second, 20*time.Millisecond, "a tree head covering the whole log", func() bool {
		ls, err := st.LogState(ctx)
		if err != nil {
			return false
		}
		final, err = st.TreeHead(ctx)
		return err == nil && final.TreeSize == ls.Size()
	})
	rep, err := logaudit.Run(ctx, st, st, logKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) > 0 {
		t.Fatalf("log audit after the failover:\n%s", strings.Join(rep.Findings, "\n"))
	}
	if rep.Certificates < len(issued) {
		t.Fatalf("the audit counts %d certificates, clients received %d", rep.Certificates, len(issued))
	}
	etcdConsistent(t, st, logKey, final, issued)
}

// etcdConsistent checks every tree head the clients received against
// final: a valid signature and a consistency proof from the store.
func etcdConsistent(t *testing.T, st store.Log, logKey crypto.PublicKey, final *ct.SignedTreeHead, issued []*logE2EIssued) {
	t.Helper()
	ctx := context.Background()
	bySize := map[uint64][etcdHashSize]byte{}
	for _, is := range issued {
		sth, err := is.log.STH.ToSignedTreeHead()
		if err != nil {
			t.Fatal(err)
		}
		if err := translog.VerifySTH(logKey, sth); err != nil {
			t.Fatalf("tree head of size %d: %v", sth.TreeSize, err)
		}
		if root, ok := bySize[sth.TreeSize]; ok {
			if root != sth.SHA256RootHash {
				t.Fatalf("two roots for size %d", sth.TreeSize)
			}
			continue // proved already
		}
		bySize[sth.TreeSize] = sth.SHA256RootHash
		if sth.TreeSize > final.TreeSize {
			t.Fatalf("a client got a tree head of size %d beyond the final %d", sth.TreeSize, final.TreeSize)
		}
		p, err := translog.ConsistencyProof(ctx, st, sth.TreeSize, final.TreeSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := translog.VerifyConsistency(sth.TreeSize, final.TreeSize, p, sth.SHA256RootHash[:], final.SHA256RootHash[:]); err != nil {
			t.Fatalf("tree head of size %d is not consistent with the final one (%d): %v", sth.TreeSize, final.TreeSize, err)
		}
	}
}

const etcdHashSize = 32
