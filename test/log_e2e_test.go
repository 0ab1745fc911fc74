package test

// End-to-end tests of the issuance log, checked with the Certificate
// Transparency project's own client (client.LogClient and, when it can be
// built, the ctclient command): tree heads verify with D/log.pub.pem,
// every issued certificate is provable from the CT API alone, the log
// survives kill -9 without a gap or a fork, and `agentca log audit`
// catches a store edited behind the daemon's back. Every package-level
// identifier here starts with logE2E (other files in this package are
// written by others).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/client"
	"github.com/google/certificate-transparency-go/jsonclient"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	bbolt "go.etcd.io/bbolt"
)

// logE2EIssued is one certificate a client received.
type logE2EIssued struct {
	leaf *x509.Certificate
	pem  string // leaf and chain
	log  wire.LogReceipt
}

// logE2ETokens creates n join tokens for id in one admin call.
func logE2ETokens(t *testing.T, c *testCA, id string, n int) []string {
	t.Helper()
	r := mustRun(t, "token", "create", "--dir", c.Dir, "--spiffe-id", id, "--count", strconv.Itoa(n))
	toks := strings.Fields(r.stdout)
	if len(toks) != n {
		t.Fatalf("token create --count %d printed %d tokens", n, len(toks))
	}
	return toks
}

// logE2ESign enrolls with tok over /v1/sign and decodes the response.
func logE2ESign(hc *http.Client, c *testCA, tok, csr string) (*logE2EIssued, error) {
	b, err := json.Marshal(signBody("join", tok, csr, ""))
	if err != nil {
		return nil, err
	}
	r, err := tryDo(hc, http.MethodPost, c.URL+"/v1/sign", "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusCreated {
		return nil, fmt.Errorf("sign: status %d: %s", r.status, r.body)
	}
	var resp wire.SignResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		return nil, err
	}
	if resp.Log == nil {
		return nil, fmt.Errorf("the SignResponse has no log object: %s", r.body)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	if block == nil {
		return nil, errors.New("no certificate PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return &logE2EIssued{leaf: leaf, pem: resp.Certificate + strings.Join(resp.Chain, ""), log: *resp.Log}, nil
}

// logE2EClient is the CT project's client for the CA's log, verifying tree
// head signatures with D/log.pub.pem.
func logE2EClient(t *testing.T, c *testCA) (*client.LogClient, crypto.PublicKey, []byte) {
	t.Helper()
	pub, pubPEM := logPublicKey(t, c.Dir)
	lc, err := client.New("http://"+c.HTTP, &http.Client{Timeout: 30 * time.Second}, jsonclient.Options{PublicKey: string(pubPEM)})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	return lc, pub, pubPEM
}

// logPublicKey reads the log's public key, D/log.pub.pem.
func logPublicKey(t *testing.T, dir string) (crypto.PublicKey, []byte) {
	t.Helper()
	pubPEM, err := os.ReadFile(filepath.Join(dir, "log.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil {
		t.Fatal("log.pub.pem holds no PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub, pubPEM
}

// logE2ECheckReceipt checks a SignResponse's log object with the CT
// project's code only: the tree head's signature, the leaf hash computed
// from the certificate and timestamp, and the inclusion proof.
func logE2ECheckReceipt(t *testing.T, verifier *ct.SignatureVerifier, is *logE2EIssued) {
	t.Helper()
	r := is.log
	sth, err := r.STH.ToSignedTreeHead()
	if err != nil {
		t.Fatalf("receipt STH: %v", err)
	}
	if err := verifier.VerifySTHSignature(*sth); err != nil {
		t.Fatalf("the receipt's tree head does not verify with log.pub.pem: %v", err)
	}
	if sth.TreeSize != r.TreeSize || !bytes.Equal(sth.SHA256RootHash[:], r.RootHash) || r.Index >= r.TreeSize {
		t.Fatalf("receipt: tree_size %d root %x index %d, STH size %d root %x", r.TreeSize, r.RootHash, r.Index, sth.TreeSize, sth.SHA256RootHash[:])
	}
	hash, err := ct.LeafHashForLeaf(ct.CreateX509MerkleTreeLeaf(ct.ASN1Cert{Data: is.leaf.Raw}, r.Timestamp))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hash[:], r.LeafHash) {
		t.Fatalf("receipt leaf_hash %x, the CT library computes %x from the certificate and timestamp", r.LeafHash, hash[:])
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.Index, r.TreeSize, hash[:], r.InclusionProof, r.RootHash); err != nil {
		t.Fatalf("receipt inclusion proof for serial %x: %v", is.leaf.SerialNumber, err)
	}
	// The timestamp is the issuance time: NotBefore plus the one-minute
	// backdate (what `agentca log prove` relies on).
	if want := uint64(is.leaf.NotBefore.Add(time.Minute).UnixMilli()); r.Timestamp != want {
		t.Errorf("leaf timestamp %d, want NotBefore+1m = %d", r.Timestamp, want)
	}
}

// logE2EProve fetches and verifies, with the CT client, the inclusion of
// is in the tree of sth.
func logE2EProve(ctx context.Context, lc *client.LogClient, sth *ct.SignedTreeHead, is *logE2EIssued) error {
	hash, err := ct.LeafHashForLeaf(ct.CreateX509MerkleTreeLeaf(ct.ASN1Cert{Data: is.leaf.Raw}, is.log.Timestamp))
	if err != nil {
		return err
	}
	resp, err := lc.GetProofByHash(ctx, hash[:], sth.TreeSize)
	if err != nil {
		return fmt.Errorf("get-proof-by-hash for serial %x: %w", is.leaf.SerialNumber, err)
	}
	if uint64(resp.LeafIndex) != is.log.Index {
		return fmt.Errorf("serial %x is at index %d, its receipt says %d", is.leaf.SerialNumber, resp.LeafIndex, is.log.Index)
	}
	return proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(resp.LeafIndex), sth.TreeSize, hash[:], resp.AuditPath, sth.SHA256RootHash[:])
}

// logE2EConsistent checks with the CT client that sth2 extends sth1.
func logE2EConsistent(ctx context.Context, lc *client.LogClient, sth1, sth2 *ct.SignedTreeHead) error {
	if sth1.TreeSize == sth2.TreeSize {
		if sth1.SHA256RootHash != sth2.SHA256RootHash {
			return fmt.Errorf("two roots for size %d", sth1.TreeSize)
		}
		return nil
	}
	p, err := lc.GetSTHConsistency(ctx, sth1.TreeSize, sth2.TreeSize)
	if err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, sth1.TreeSize, sth2.TreeSize, p, sth1.SHA256RootHash[:], sth2.SHA256RootHash[:])
}

// logE2EEntries fetches every entry of the tree of size with the CT
// client (which parses each leaf and its chain), page by page.
func logE2EEntries(t *testing.T, ctx context.Context, lc *client.LogClient, size uint64) []ct.LogEntry {
	t.Helper()
	var out []ct.LogEntry
	for start := int64(0); start < int64(size); {
		es, err := lc.GetEntries(ctx, start, int64(size)-1)
		if err != nil {
			t.Fatalf("get-entries from %d: %v", start, err)
		}
		if len(es) == 0 {
			t.Fatalf("get-entries from %d returned nothing", start)
		}
		for _, e := range es {
			if e.Index != start {
				t.Fatalf("get-entries: entry %d where %d was expected", e.Index, start)
			}
			start++
		}
		out = append(out, es...)
	}
	return out
}

// logE2ECertCount is the number of certificates the daemon has recorded.
func logE2ECertCount(t *testing.T, c *testCA) int {
	t.Helper()
	r := mustRun(t, "certs", "list", "--dir", c.Dir, "--json")
	var out []wire.CertInfo
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("certs list --json: %v", err)
	}
	return len(out)
}

// TestLogCTClient: the CT project's client verifies the tree heads, finds
// and proves every certificate, checks consistency between sizes and reads
// every entry; the agentca log commands agree, and a forged tree head is
// reported as a fork.
func TestLogCTClient(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	ctx := context.Background()
	hc := c.client(nil)
	defer hc.CloseIdleConnections()
	lc, pub, pubPEM := logE2EClient(t, c)
	verifier, err := ct.NewSignatureVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}

	first, err := lc.GetSTH(ctx)
	if err != nil {
		t.Fatalf("get-sth (verified by the CT client with log.pub.pem): %v", err)
	}
	var issued []*logE2EIssued
	for i, tok := range logE2ETokens(t, c, "spiffe://example.org/agent/logged", 6) {
		is, err := logE2ESign(hc, c, tok, csrPEM(t, newECKey(t), nil))
		if err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
		logE2ECheckReceipt(t, verifier, is)
		issued = append(issued, is)
	}
	sth, err := lc.GetSTH(ctx)
	if err != nil {
		t.Fatalf("get-sth: %v", err)
	}
	if sth.TreeSize < first.TreeSize+6 {
		t.Fatalf("tree grew from %d to %d after 6 issuances", first.TreeSize, sth.TreeSize)
	}
	if got, err := c.client(nil).Get(c.URL + "/v1/log-key"); err != nil || got.StatusCode != 200 {
		t.Fatalf("GET /v1/log-key over HTTPS: %v", err)
	} else {
		b, _ := io.ReadAll(got.Body)
		got.Body.Close()
		if !bytes.Equal(b, pubPEM) {
			t.Errorf("/v1/log-key is not log.pub.pem:\n%s", b)
		}
	}

	t.Run("inclusion and consistency", func(t *testing.T) {
		for _, is := range issued {
			if err := logE2EProve(ctx, lc, sth, is); err != nil {
				t.Error(err)
			}
			rsth, _ := is.log.STH.ToSignedTreeHead()
			if err := logE2EConsistent(ctx, lc, rsth, sth); err != nil {
				t.Errorf("tree head of size %d is not consistent with the latest (%d): %v", rsth.TreeSize, sth.TreeSize, err)
			}
		}
		if err := logE2EConsistent(ctx, lc, first, sth); err != nil {
			t.Errorf("consistency %d → %d: %v", first.TreeSize, sth.TreeSize, err)
		}
	})

	t.Run("get-entries returns every certificate", func(t *testing.T) {
		entries := logE2EEntries(t, ctx, lc, sth.TreeSize)
		bySerial := map[string]bool{}
		for _, e := range entries {
			if e.X509Cert == nil || e.Leaf.TimestampedEntry.EntryType != ct.X509LogEntryType {
				t.Fatalf("entry %d is not an x509_entry", e.Index)
			}
			if len(e.Chain) != 2 || !bytes.Equal(e.Chain[1].Data, c.Roots[0].Raw) {
				t.Errorf("entry %d: extra_data chain of %d certificates, want issuing CA + root", e.Index, len(e.Chain))
			}
			bySerial[e.X509Cert.SerialNumber.Text(16)] = true
		}
		for _, is := range issued {
			if !bySerial[is.leaf.SerialNumber.Text(16)] {
				t.Errorf("serial %x is not among the entries", is.leaf.SerialNumber)
			}
		}
		if n := logE2ECertCount(t, c); uint64(n) != sth.TreeSize || len(bySerial) != n {
			t.Errorf("%d certificates recorded, %d entries (%d distinct serials)", n, sth.TreeSize, len(bySerial))
		}
		roots, err := lc.GetAcceptedRoots(ctx)
		if err != nil || len(roots) != 1 || !bytes.Equal(roots[0].Data, c.Roots[0].Raw) {
			t.Errorf("get-roots: %d roots, %v", len(roots), err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		base := "http://" + c.HTTP
		for _, q := range []string{
			"/ct/v1/get-sth-consistency?first=2&second=1",
			"/ct/v1/get-sth-consistency?first=1&second=999999",
			"/ct/v1/get-sth-consistency?first=x&second=2",
			"/ct/v1/get-proof-by-hash?hash=notbase64!&tree_size=1",
			"/ct/v1/get-proof-by-hash?hash=" + base64.StdEncoding.EncodeToString(issued[0].log.LeafHash) + "&tree_size=0",
			"/ct/v1/get-entries?start=5&end=1",
			"/ct/v1/get-entries?start=999999&end=1000000",
			"/ct/v1/get-entries?start=-1&end=2",
		} {
			wantError(t, do(t, http.DefaultClient, http.MethodGet, base+q, "", nil), http.StatusBadRequest, "bad_request")
		}
		for _, p := range []string{"/ct/v1/add-chain", "/ct/v1/add-pre-chain"} {
			wantError(t, do(t, http.DefaultClient, http.MethodPost, base+p, "application/json", strings.NewReader(`{"chain":[]}`)), http.StatusMethodNotAllowed, "method_not_allowed")
		}
	})

	t.Run("ctclient command", func(t *testing.T) {
		bin := logE2ECTClient(t)
		is := issued[len(issued)-1]
		chain := filepath.Join(t.TempDir(), "chain.pem")
		writeFile(t, chain, []byte(is.pem))
		pubFile := filepath.Join(c.Dir, "log.pub.pem")
		conn := []string{"--log_uri", "http://" + c.HTTP, "--pub_key", pubFile}
		run := func(args ...string) string {
			t.Helper()
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("ctclient %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		if out := run(append([]string{"get-sth"}, conn...)...); !strings.Contains(out, "Got STH for V1 log") {
			t.Errorf("ctclient get-sth:\n%s", out)
		}
		out := run(append([]string{"get-inclusion-proof", "--cert_chain", chain, "--timestamp", strconv.FormatUint(is.log.Timestamp, 10)}, conn...)...)
		if !strings.Contains(out, "Verified that hash") {
			t.Errorf("ctclient get-inclusion-proof --cert_chain did not verify:\n%s", out)
		}
		cur, err := lc.GetSTH(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = run(append([]string{"get-consistency-proof", "--prev_size", strconv.FormatUint(first.TreeSize, 10),
			"--prev_hash", hex.EncodeToString(first.SHA256RootHash[:]), "--size", strconv.FormatUint(cur.TreeSize, 10),
			"--tree_hash", hex.EncodeToString(cur.SHA256RootHash[:])}, conn...)...)
		if !strings.Contains(out, "Verified that hash") {
			t.Errorf("ctclient get-consistency-proof did not verify:\n%s", out)
		}
	})

	t.Run("agentca log", func(t *testing.T) {
		httpURL := "http://" + c.HTTP
		pubFile := filepath.Join(c.Dir, "log.pub.pem")
		r := mustRun(t, "log", "sth", "--ca", httpURL, "--log-key", pubFile)
		if !strings.Contains(r.stdout, "signature  verified") {
			t.Errorf("log sth:\n%s", r)
		}
		state := filepath.Join(t.TempDir(), "sth.json")
		mustRun(t, "log", "verify", "--ca", httpURL, "--state", state)
		is, err := logE2ESign(hc, c, logE2ETokens(t, c, "spiffe://example.org/agent/later", 1)[0], csrPEM(t, newECKey(t), nil))
		if err != nil {
			t.Fatal(err)
		}
		if r := mustRun(t, "log", "verify", "--ca", httpURL, "--state", state, "--log-key", pubFile); !strings.Contains(r.stdout, "consistent") {
			t.Errorf("log verify after an issuance:\n%s", r)
		}
		certFile := filepath.Join(t.TempDir(), "cert.pem")
		writeFile(t, certFile, []byte(is.pem))
		if r := mustRun(t, "log", "prove", "--ca", httpURL, "--cert", certFile, "--log-key", pubFile); !strings.Contains(r.stdout, fmt.Sprintf("is log entry %d ", is.log.Index)) {
			t.Errorf("log prove:\n%s", r)
		}
		// The root is no certificate of the log.
		r = runCLI(t, "log", "prove", "--ca", httpURL, "--cert", c.rootsFile(), "--log-key", pubFile)
		if r.code != 1 || !strings.Contains(r.stderr, "not in the log") {
			t.Errorf("log prove of the root: want exit 1, not in the log:\n%s", r)
		}
		oneLine(t, r)

		// A tree head of the current size over another tree, signed with
		// the log key: what a CA showing different histories to
		// different auditors would publish.
		key, err := ca.ReadKey(filepath.Join(c.Dir, "keys", "log.key"), nil)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := translog.NewSigner(key)
		if err != nil {
			t.Fatal(err)
		}
		cur, err := lc.GetSTH(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fake := make([][]byte, cur.TreeSize)
		for i := range fake {
			h := rfc6962.DefaultHasher.HashLeaf([]byte{byte(i), byte(i >> 8)})
			fake[i] = h
		}
		forkState, err := translog.State{}.Append(fake, nil)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := signer.Sign(forkState, cur.Timestamp)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := translog.STHResponse(forged)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := translog.LogID(pub)
		b, _ := json.Marshal(map[string]any{"log_id": hex.EncodeToString(id[:]), "sth": resp})
		writeFile(t, state, b)
		r = runCLI(t, "log", "verify", "--ca", httpURL, "--state", state, "--log-key", pubFile)
		if r.code != 1 || !strings.Contains(r.stderr, "NOT consistent") {
			t.Errorf("log verify against a forged tree head: want exit 1 and a fork message:\n%s", r)
		}
		oneLine(t, r)
		// A smaller forged tree: the consistency proof fails.
		forkState, _ = translog.State{}.Append(fake[:len(fake)/2], nil)
		forged, _ = signer.Sign(forkState, cur.Timestamp)
		resp, _ = translog.STHResponse(forged)
		b, _ = json.Marshal(map[string]any{"log_id": hex.EncodeToString(id[:]), "sth": resp})
		writeFile(t, state, b)
		if r := runCLI(t, "log", "verify", "--ca", httpURL, "--state", state, "--log-key", pubFile); r.code != 1 || !strings.Contains(r.stderr, "NOT consistent") {
			t.Errorf("log verify against a forged smaller tree head: want exit 1:\n%s", r)
		}
	})
}

// logE2ECTClient builds the CT module's ctclient command into a temporary
// directory, skipping the test when it cannot be built (no module proxy
// reachable and nothing cached).
func logE2ECTClient(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/google/certificate-transparency-go/client/ctclient@v1.4.0")
	cmd.Env = append(childEnv(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("the ctclient command cannot be built here (the LogClient checks above ran): %v\n%s", err, out)
	}
	return filepath.Join(dir, "ctclient")
}

// TestLogCrashKill9: concurrent issuance, kill -9 of the daemon in the
// middle, restart. Every certificate a client received is provable against
// the new tree head, which is consistent with every tree head published
// before the crash; the log has exactly as many entries as there are
// certificates, and the offline audit finds nothing.
func TestLogCrashKill9(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	ctx := context.Background()
	lc, pub, _ := logE2EClient(t, c)
	verifier, err := ct.NewSignatureVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 8, 40
	toks := logE2ETokens(t, c, "spiffe://example.org/agent/crash", workers*perWorker)
	csrs := make([]string, len(toks))
	for i := range csrs {
		csrs[i] = csrPEM(t, newECKey(t), nil)
	}

	var (
		mu       sync.Mutex
		received []*logE2EIssued
		seen     []*ct.SignedTreeHead // tree heads published before the crash
	)
	var got atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := c.client(nil)
			defer hc.CloseIdleConnections()
			for i := range perWorker {
				k := w*perWorker + i
				is, err := logE2ESign(hc, c, toks[k], csrs[k])
				if err != nil {
					select {
					case <-killed:
						return // the daemon is gone
					default:
						t.Errorf("sign before the crash: %v", err)
						return
					}
				}
				mu.Lock()
				received = append(received, is)
				if sth, err := is.log.STH.ToSignedTreeHead(); err == nil {
					seen = append(seen, sth)
				}
				mu.Unlock()
				got.Add(1)
			}
		}()
	}
	// Watch get-sth too, as a monitor would.
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			sth, err := lc.GetSTH(sctx)
			cancel()
			if err == nil {
				mu.Lock()
				seen = append(seen, sth)
				mu.Unlock()
			}
		}
	}()
	eventually(t, time.Minute, time.Millisecond, "a third of the certificates to be issued", func() bool {
		return got.Load() >= workers*perWorker/3
	})
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	p.stopped = true
	close(killed)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	close(stopWatch)
	<-watched
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d certificates received before kill -9; %d tree heads seen", len(received), len(seen))

	c.start()
	sth, err := lc.GetSTH(ctx)
	if err != nil {
		t.Fatalf("get-sth after the restart: %v", err)
	}
	for _, is := range received {
		logE2ECheckReceipt(t, verifier, is)
		if err := logE2EProve(ctx, lc, sth, is); err != nil {
			t.Errorf("a certificate received before the crash is not provable after it: %v", err)
		}
	}
	checked := map[uint64]bool{}
	for _, old := range seen {
		if checked[old.TreeSize] {
			continue
		}
		checked[old.TreeSize] = true
		if err := verifier.VerifySTHSignature(*old); err != nil {
			t.Fatalf("a tree head seen before the crash does not verify: %v", err)
		}
		if err := logE2EConsistent(ctx, lc, old, sth); err != nil {
			t.Errorf("the tree head of size %d seen before the crash is not consistent with the new one (%d): %v", old.TreeSize, sth.TreeSize, err)
		}
	}
	// Every certificate (including those whose answer the crash cut off,
	// and the daemon's own) is an entry, and nothing else is.
	eventually(t, 10*time.Second, 20*time.Millisecond, "the tree head to cover every certificate", func() bool {
		cur, err := lc.GetSTH(ctx)
		if err != nil {
			return false
		}
		return cur.TreeSize == uint64(logE2ECertCount(t, c))
	})
	if n := len(received); n < workers*perWorker/3 {
		t.Errorf("only %d certificates received", n)
	}
	c.stop()
	if r := runCLI(t, "log", "audit", "--dir", c.Dir); r.code != 0 {
		t.Errorf("log audit after the crash and restart:\n%s", r)
	}
}

// logE2ECopyState copies the files `log audit` and `serve` read into a new
// state directory.
func logE2ECopyState(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "ca")
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), fi.Mode().Perm())
		case !fi.Mode().IsRegular(): // the admin socket
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// logE2EEditDB changes the bbolt file of the state directory dir directly.
func logE2EEditDB(t *testing.T, dir string, edit func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, "agentca.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
}

// TestLogAuditTamper: with the daemon stopped, a certificate record is
// deleted, or a log entry altered, directly in the bbolt file; `agentca log
// audit` exits 1 and names what diverged, and the daemon refuses to serve
// a log that contradicts its signed tree head.
func TestLogAuditTamper(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	hc := c.client(nil)
	var issued []*logE2EIssued
	for _, tok := range logE2ETokens(t, c, "spiffe://example.org/agent/tamper", 4) {
		is, err := logE2ESign(hc, c, tok, csrPEM(t, newECKey(t), nil))
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, is)
	}
	hc.CloseIdleConnections()
	c.stop()
	if r := runCLI(t, "log", "audit", "--dir", c.Dir); r.code != 0 || !strings.Contains(r.stdout, "OK") {
		t.Fatalf("log audit of an untouched store:\n%s", r)
	}
	victim := issued[1]
	serialKey := victim.leaf.SerialNumber.Bytes()
	serialHex := hex.EncodeToString(serialKey)

	t.Run("certificate record deleted", func(t *testing.T) {
		dir := logE2ECopyState(t, c.Dir)
		logE2EEditDB(t, dir, func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("certs"))
			if b.Get(serialKey) == nil {
				return fmt.Errorf("no record under %x", serialKey)
			}
			return b.Delete(serialKey)
		})
		r := runCLI(t, "log", "audit", "--dir", dir)
		if r.code != 1 {
			t.Fatalf("want exit 1:\n%s", r)
		}
		t.Logf("log audit:\n%s%s", r.stdout, r.stderr)
		oneLine(t, r)
		want := fmt.Sprintf("log entry %d (certificate serial %s) has no certificate record", victim.log.Index, serialHex)
		if !strings.Contains(r.stdout, want) || !strings.Contains(r.stderr, serialHex) {
			t.Errorf("the audit does not name the entry and serial (%q):\n%s", want, r)
		}
	})

	t.Run("log entry altered", func(t *testing.T) {
		dir := logE2ECopyState(t, c.Dir)
		logE2EEditDB(t, dir, func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("log_entries"))
			k := binary.BigEndian.AppendUint64(nil, victim.log.Index)
			v := append([]byte(nil), b.Get(k)...)
			if len(v) == 0 {
				return fmt.Errorf("no entry %d", victim.log.Index)
			}
			v[len(v)-3] ^= 0x01 // inside the certificate's signature
			return b.Put(k, v)
		})
		r := runCLI(t, "log", "audit", "--dir", dir)
		if r.code != 1 {
			t.Fatalf("want exit 1:\n%s", r)
		}
		t.Logf("log audit:\n%s%s", r.stdout, r.stderr)
		oneLine(t, r)
		for _, want := range []string{
			fmt.Sprintf("entry %d: its leaf hash", victim.log.Index),
			fmt.Sprintf("certificate %s (spiffe://example.org/agent/tamper): log entry %d holds another certificate", serialHex, victim.log.Index),
			"is not the tree of the entries",
			"signed tree head says",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("the audit does not report %q:\n%s", want, r)
			}
		}
	})

	t.Run("stored tree altered", func(t *testing.T) {
		dir := logE2ECopyState(t, c.Dir)
		var node compact.NodeID
		logE2EEditDB(t, dir, func(tx *bbolt.Tx) error {
			size := uint64(tx.Bucket([]byte("log_entries")).Stats().KeyN)
			node = compact.RangeNodes(0, size, nil)[0] // the largest perfect subtree
			b := tx.Bucket([]byte("log_nodes"))
			k := binary.BigEndian.AppendUint64([]byte{byte(node.Level)}, node.Index)
			v := append([]byte(nil), b.Get(k)...)
			if len(v) != 32 {
				return fmt.Errorf("no node %+v", node)
			}
			v[0] ^= 0x80
			return b.Put(k, v)
		})
		r := runCLI(t, "log", "audit", "--dir", dir)
		if r.code != 1 {
			t.Fatalf("want exit 1:\n%s", r)
		}
		t.Logf("log audit:\n%s%s", r.stdout, r.stderr)
		if want := fmt.Sprintf("stored tree node level %d index %d is not the entries'", node.Level, node.Index); !strings.Contains(r.stdout, want) {
			t.Errorf("the audit does not report %q:\n%s", want, r)
		}
		// The daemon refuses to publish this history.
		r = runCLI(t, "serve", "--dir", dir)
		if r.code != 1 || !strings.Contains(r.stderr, "log audit") {
			t.Errorf("serve on a store that contradicts its tree head: want exit 1 pointing at the audit:\n%s", r)
		}
		oneLine(t, r)
	})

	if r := runCLI(t, "log", "audit", "--dir", c.Dir); r.code != 0 {
		t.Errorf("the original state directory no longer audits clean:\n%s", r)
	}
}

// TestLogGracefulStop: SIGTERM in the middle of concurrent issuance. Every
// answer the daemon still gives carries a valid proof (the tree head
// signer outlives the drain), the daemon exits 0 promptly, and the saved
// tree head covers every certificate: the offline audit finds nothing.
func TestLogGracefulStop(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	c.start()
	_, pub, _ := logE2EClient(t, c)
	verifier, err := ct.NewSignatureVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 8, 30
	toks := logE2ETokens(t, c, "spiffe://example.org/agent/drain", workers*perWorker)
	csrs := make([]string, len(toks))
	for i := range csrs {
		csrs[i] = csrPEM(t, newECKey(t), nil)
	}
	var mu sync.Mutex
	var received []*logE2EIssued
	var got atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := c.client(nil)
			defer hc.CloseIdleConnections()
			for i := range perWorker {
				is, err := logE2ESign(hc, c, toks[w*perWorker+i], csrs[w*perWorker+i])
				if err != nil {
					return // stopping: refused or cut off
				}
				mu.Lock()
				received = append(received, is)
				mu.Unlock()
				got.Add(1)
			}
		}()
	}
	eventually(t, time.Minute, time.Millisecond, "some certificates to be issued", func() bool { return got.Load() >= workers*perWorker/3 })
	start := time.Now()
	c.stop()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the daemon took %s to stop", d)
	}
	wg.Wait()
	for _, is := range received {
		logE2ECheckReceipt(t, verifier, is)
	}
	r := mustRun(t, "log", "audit", "--dir", c.Dir)
	m := regexp.MustCompile(`signed tree head\s+size (\d+)`).FindStringSubmatch(r.stdout)
	e := regexp.MustCompile(`log entries\s+(\d+)`).FindStringSubmatch(r.stdout)
	if m == nil || e == nil || m[1] != e[1] {
		t.Errorf("the saved tree head does not cover the whole log after SIGTERM:\n%s", r)
	}
}
