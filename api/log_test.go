package api_test

// Tests of the issuance log at the HTTP edge: the SignResponse's log
// object, the CT v1 endpoints, the tree head signer behind them (one
// signature per batch at most, a failure is never answered with an
// unproven certificate, a restart continues the log; package logsign
// tests the signer's start-up check of the stored log). Every
// package-level identifier here starts with logT (other files in this
// package are written by others).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	"github.com/prometheus/client_golang/prometheus"
)

// logTSigner is a log key that counts its signatures and can be made to
// fail.
type logTSigner struct {
	crypto.Signer
	count atomic.Int64
	fail  atomic.Bool
}

func (s *logTSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.fail.Load() {
		return nil, errors.New("the HSM is unplugged")
	}
	s.count.Add(1)
	return s.Signer.Sign(r, digest, opts)
}

// logTEnv is a CA with an issuance log: bolt store, authority, join-token
// provisioner, the tree head signer running, and the API on httptest
// servers.
type logTEnv struct {
	t       *testing.T
	h       *ca.Hierarchy
	path    string
	store   *bolt.Store
	key     *logTSigner
	log     *logsign.Signer
	join    *jointoken.Provisioner
	https   *httptest.Server
	plain   *httptest.Server
	commits atomic.Int64 // commits that appended to the log
	stop    func()
}

func logTNewEnv(t *testing.T) *logTEnv {
	t.Helper()
	h, err := ca.NewHierarchy("agentca-log-test", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &logTEnv{t: t, h: h, path: filepath.Join(t.TempDir(), "agentca.db"), key: &logTSigner{Signer: k}}
	e.open()
	return e
}

// open starts (or restarts) everything on e.path.
func (e *logTEnv) open() {
	t := e.t
	t.Helper()
	appended := make(chan struct{}, 1)
	st, err := bolt.Open(e.path, bolt.Options{OnLogAppend: func() {
		e.commits.Add(1)
		select {
		case appended <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.store = st
	signer, err := translog.NewSigner(e.key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.log, err = logsign.New(ctx, logsign.Options{Store: st, Key: signer, Appended: appended})
	if err != nil {
		cancel()
		st.Close()
		t.Fatalf("logsign.New: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); e.log.Run(ctx) }()
	iss, err := ca.NewIssuer(e.h.Issuing, e.h.IssuingKey, e.h.Root)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(ca.Options{TrustDomain: "example.org", Issuer: iss, Recorder: st})
	if err != nil {
		t.Fatal(err)
	}
	if e.join, err = jointoken.New("join", st, 15*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	trust, err := api.NewTrust("example.org", []*x509.Certificate{e.h.Root}, 1, time.Minute, iss)
	if err != nil {
		t.Fatal(err)
	}
	opts := api.Options{Authority: authority, Store: st, Trust: trust, Log: e.log, Registry: prometheus.NewRegistry(),
		Provisioners: map[string]*api.Provisioner{"join": {Name: "join", Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: e.join}}}
	if _, err := api.New(opts); err == nil {
		t.Fatal("a Server with a log but no LogReader to serve its entries was made")
	}
	opts.LogReader = st
	srv, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.https = httptest.NewUnstartedServer(srv.HTTPSHandler())
	e.https.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	e.https.StartTLS()
	e.plain = httptest.NewServer(srv.HTTPHandler())
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		e.https.Close()
		e.plain.Close()
		cancel()
		<-done
		st.Close()
	}
	t.Cleanup(e.stop)
}

// logTResp is a SignResponse as a client reads it.
type logTResp struct {
	wire.SignResponse
	leaf *x509.Certificate
	key  crypto.Signer
}

func (e *logTEnv) client(cert *tls.Certificate) *http.Client {
	tr := e.https.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func logTCSR(key crypto.Signer) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// post sends body to path on the HTTPS server and decodes a 201.
func (e *logTEnv) post(hc *http.Client, path string, body any, key crypto.Signer) (*logTResp, int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, 0, nil, err
	}
	resp, err := hc.Post(e.https.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, resp.StatusCode, raw, nil
	}
	var r logTResp
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, resp.StatusCode, raw, err
	}
	block, _ := pem.Decode([]byte(r.Certificate))
	if block == nil {
		return nil, resp.StatusCode, raw, errors.New("no certificate")
	}
	if r.leaf, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, resp.StatusCode, raw, err
	}
	r.key = key
	return &r, resp.StatusCode, raw, nil
}

// sign enrolls one certificate with a fresh join token.
func (e *logTEnv) sign(hc *http.Client) (*logTResp, error) {
	toks, err := e.join.Create(context.Background(), "spiffe://example.org/agent/log", 0, 1)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := logTCSR(key)
	if err != nil {
		return nil, err
	}
	r, status, raw, err := e.post(hc, "/v1/sign", map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr}, key)
	if err == nil && r == nil {
		err = fmt.Errorf("sign: status %d: %s", status, raw)
	}
	return r, err
}

// logTCheck verifies a SignResponse's log object on its own: the tree head
// signature with the log key, the leaf hash from the certificate and the
// timestamp, the inclusion proof.
func logTCheck(t *testing.T, pub crypto.PublicKey, r *logTResp) {
	t.Helper()
	rc := r.Log
	if rc == nil {
		t.Fatal("the SignResponse has no log object")
	}
	sth, err := rc.STH.ToSignedTreeHead()
	if err != nil {
		t.Fatal(err)
	}
	if err := translog.VerifySTH(pub, sth); err != nil {
		t.Fatal(err)
	}
	leaf, err := translog.NewLeaf(r.leaf.Raw, rc.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf.Hash, rc.LeafHash) || rc.TreeSize != sth.TreeSize || !bytes.Equal(rc.RootHash, sth.SHA256RootHash[:]) {
		t.Fatalf("receipt does not match its certificate and tree head: %+v", rc)
	}
	if err := translog.VerifyInclusion(leaf.Hash, rc.Index, rc.TreeSize, rc.InclusionProof, rc.RootHash); err != nil {
		t.Fatal(err)
	}
	if want := uint64(r.leaf.NotBefore.Add(time.Minute).UnixMilli()); rc.Timestamp != want {
		t.Fatalf("leaf timestamp %d, want NotBefore+1m %d", rc.Timestamp, want)
	}
}

// TestLogSignResponse: sequential, concurrent and renewal responses each
// carry a proof against a signed tree head that includes the certificate;
// the signer signs at most once per committed batch.
func TestLogSignResponse(t *testing.T) {
	e := logTNewEnv(t)
	hc := e.client(nil)
	pub := e.key.Public()
	var all []*logTResp
	for range 3 {
		r, err := e.sign(hc)
		if err != nil {
			t.Fatal(err)
		}
		logTCheck(t, pub, r)
		all = append(all, r)
	}
	if all[0].Log.Index+1 != all[1].Log.Index || all[1].Log.Index+1 != all[2].Log.Index {
		t.Errorf("sequential issuances got indexes %d, %d, %d", all[0].Log.Index, all[1].Log.Index, all[2].Log.Index)
	}
	if len(all[0].Log.InclusionProof) != 0 || all[0].Log.TreeSize != 1 {
		// The first certificate of a new log: tree of size 1, empty
		// proof, and the JSON must still be an array.
		t.Errorf("first entry: tree size %d, proof %d hashes", all[0].Log.TreeSize, len(all[0].Log.InclusionProof))
	}

	const n = 64
	before := e.key.count.Load()
	commitsBefore := e.commits.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := e.sign(hc)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			all = append(all, r)
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	signs, commits := e.key.count.Load()-before, e.commits.Load()-commitsBefore
	t.Logf("%d concurrent issuances: %d commits, %d tree head signatures", n, commits, signs)
	if signs > commits {
		t.Errorf("%d tree head signatures for %d commits: want at most one per batch", signs, commits)
	}
	seen := map[uint64]bool{}
	for _, r := range all {
		logTCheck(t, pub, r)
		if seen[r.Log.Index] {
			t.Fatalf("index %d given twice", r.Log.Index)
		}
		seen[r.Log.Index] = true
	}
	st, err := e.store.LogState(context.Background())
	if err != nil || st.Size() != uint64(len(all)) {
		t.Fatalf("log size %d, %v; want %d", st.Size(), err, len(all))
	}

	// Renewal over mTLS is logged and proven the same way.
	prev := all[0]
	cert := &tls.Certificate{Certificate: [][]byte{prev.leaf.Raw, e.h.Issuing.Raw}, PrivateKey: prev.key, Leaf: prev.leaf}
	r, status, raw, err := e.post(e.client(cert), "/v1/renew", map[string]string{}, prev.key)
	if err != nil || r == nil {
		t.Fatalf("renew: %d %s %v", status, raw, err)
	}
	logTCheck(t, pub, r)
	if r.Log.Index != uint64(len(all)) {
		t.Errorf("renewal logged at %d, want %d", r.Log.Index, len(all))
	}
}

// get fetches path from the plain HTTP listener.
func (e *logTEnv) get(path string) (int, http.Header, []byte) {
	e.t.Helper()
	resp, err := http.Get(e.plain.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestLogCTEndpoints: the RFC 6962 §4 endpoints answer what the store
// holds, bound get-entries, and refuse bad parameters with a JSON 400.
func TestLogCTEndpoints(t *testing.T) {
	e := logTNewEnv(t)
	hc := e.client(nil)
	var issued []*logTResp
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 40 {
				r, err := e.sign(hc)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				issued = append(issued, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const size = 320
	sth, err := e.log.Covering(context.Background(), size)
	if err != nil {
		t.Fatal(err)
	}

	status, hdr, body := e.get("/ct/v1/get-sth")
	var sr ct.GetSTHResponse
	if status != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || json.Unmarshal(body, &sr) != nil {
		t.Fatalf("get-sth: %d %s", status, body)
	}
	got, err := sr.ToSignedTreeHead()
	if err != nil || translog.VerifySTH(e.key.Public(), got) != nil || got.TreeSize != size || got.SHA256RootHash != sth.SHA256RootHash {
		t.Fatalf("get-sth: %+v, %v", got, err)
	}

	t.Run("get-entries", func(t *testing.T) {
		status, _, body := e.get("/ct/v1/get-entries?start=10&end=1000")
		var ge ct.GetEntriesResponse
		if status != 200 || json.Unmarshal(body, &ge) != nil {
			t.Fatalf("get-entries: %d %s", status, body)
		}
		if len(ge.Entries) != api.MaxLogEntries {
			t.Fatalf("get-entries returned %d entries, want the page bound %d", len(ge.Entries), api.MaxLogEntries)
		}
		byHash := map[string]bool{}
		for i, le := range ge.Entries {
			l, err := translog.ParseLeaf(le.LeafInput)
			if err != nil {
				t.Fatalf("entry %d: %v", 10+i, err)
			}
			var chain ct.CertificateChain
			if _, err := cttls.Unmarshal(le.ExtraData, &chain); err != nil || len(chain.Entries) != 2 ||
				!bytes.Equal(chain.Entries[0].Data, e.h.Issuing.Raw) || !bytes.Equal(chain.Entries[1].Data, e.h.Root.Raw) {
				t.Fatalf("entry %d: extra_data is not [issuing CA, root]: %v", 10+i, err)
			}
			byHash[string(l.Hash)] = true
		}
		status, _, body = e.get("/ct/v1/get-entries?start=300&end=400")
		if status != 200 || json.Unmarshal(body, &ge) != nil || len(ge.Entries) != size-300 {
			t.Fatalf("get-entries at the end: %d, %d entries", status, len(ge.Entries))
		}
		found := 0
		for _, r := range issued {
			if r.Log.Index >= 10 && r.Log.Index < 10+api.MaxLogEntries {
				if !byHash[string(r.Log.LeafHash)] {
					t.Errorf("entry %d is not the certificate logged there", r.Log.Index)
				}
				found++
			}
		}
		if found != api.MaxLogEntries {
			t.Errorf("%d issued certificates fall in the page, want %d", found, api.MaxLogEntries)
		}
	})

	t.Run("get-proof-by-hash", func(t *testing.T) {
		for _, r := range issued[:20] {
			q := fmt.Sprintf("/ct/v1/get-proof-by-hash?hash=%s&tree_size=%d", logTEscapeB64(r.Log.LeafHash), size)
			status, _, body := e.get(q)
			var pr ct.GetProofByHashResponse
			if status != 200 || json.Unmarshal(body, &pr) != nil {
				t.Fatalf("get-proof-by-hash: %d %s", status, body)
			}
			if uint64(pr.LeafIndex) != r.Log.Index {
				t.Fatalf("leaf index %d, want %d", pr.LeafIndex, r.Log.Index)
			}
			if err := translog.VerifyInclusion(r.Log.LeafHash, r.Log.Index, size, pr.AuditPath, sth.SHA256RootHash[:]); err != nil {
				t.Fatal(err)
			}
		}
		unknown := make([]byte, 32)
		if status, _, body := e.get("/ct/v1/get-proof-by-hash?tree_size=5&hash=" + logTEscapeB64(unknown)); status != 404 || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("unknown hash: %d %s", status, body)
		}
	})

	t.Run("get-sth-consistency", func(t *testing.T) {
		for _, first := range []uint64{0, 1, 7, 100, 256, size} {
			status, _, body := e.get(fmt.Sprintf("/ct/v1/get-sth-consistency?first=%d&second=%d", first, size))
			var cr ct.GetSTHConsistencyResponse
			if status != 200 || json.Unmarshal(body, &cr) != nil || cr.Consistency == nil {
				t.Fatalf("get-sth-consistency %d: %d %s", first, status, body)
			}
			if first == 0 {
				continue
			}
			root, err := translog.RootAt(context.Background(), e.store, first)
			if err != nil {
				t.Fatal(err)
			}
			if err := translog.VerifyConsistency(first, size, cr.Consistency, root, sth.SHA256RootHash[:]); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("get-roots and log-key", func(t *testing.T) {
		status, _, body := e.get("/ct/v1/get-roots")
		var rr ct.GetRootsResponse
		if status != 200 || json.Unmarshal(body, &rr) != nil || len(rr.Certificates) != 1 || rr.Certificates[0] != base64.StdEncoding.EncodeToString(e.h.Root.Raw) {
			t.Fatalf("get-roots: %d %s", status, body)
		}
		der, _ := x509.MarshalPKIXPublicKey(e.key.Public())
		want := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		if status, _, body := e.get("/v1/log-key"); status != 200 || !bytes.Equal(body, want) {
			t.Errorf("HTTP /v1/log-key: %d %s", status, body)
		}
		resp, err := hc.Get(e.https.URL + "/v1/log-key")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(b, want) {
			t.Errorf("HTTPS /v1/log-key: %d %s", resp.StatusCode, b)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		h := logTEscapeB64(issued[0].Log.LeafHash)
		for _, tc := range []struct {
			path   string
			status int
		}{
			{"/ct/v1/get-sth-consistency?first=5", 400},
			{"/ct/v1/get-sth-consistency?first=6&second=5", 400},
			{"/ct/v1/get-sth-consistency?first=1&second=321", 400},
			{"/ct/v1/get-sth-consistency?first=-1&second=5", 400},
			{"/ct/v1/get-sth-consistency?first=1e3&second=5000", 400},
			{"/ct/v1/get-proof-by-hash?tree_size=5", 400},
			{"/ct/v1/get-proof-by-hash?hash=AAAA&tree_size=5", 400},
			{"/ct/v1/get-proof-by-hash?hash=" + h + "&tree_size=0", 400},
			{"/ct/v1/get-proof-by-hash?hash=" + h + "&tree_size=321", 400},
			{"/ct/v1/get-proof-by-hash?hash=" + h, 400},
			{fmt.Sprintf("/ct/v1/get-proof-by-hash?hash=%s&tree_size=%d", logTEscapeB64(issued[len(issued)-1].Log.LeafHash), issued[len(issued)-1].Log.Index), 400},
			{"/ct/v1/get-entries?start=3", 400},
			{"/ct/v1/get-entries?start=3&end=2", 400},
			{"/ct/v1/get-entries?start=320&end=330", 400},
			{"/ct/v1/get-entries?start=x&end=2", 400},
			{"/ct/v1/get-entries?start=99999999999999999999&end=2", 400},
		} {
			status, hdr, body := e.get(tc.path)
			var je wire.Error
			if status != tc.status || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || json.Unmarshal(body, &je) != nil || je.Code == "" || je.Message == "" {
				t.Errorf("%s: %d %s, want %d with a JSON error", tc.path, status, body, tc.status)
			}
		}
		for _, p := range []string{"/ct/v1/add-chain", "/ct/v1/add-pre-chain"} {
			resp, err := http.Post(e.plain.URL+p, "application/json", strings.NewReader(`{"chain":[]}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(b), "method_not_allowed") {
				t.Errorf("POST %s: %d %s, want 405", p, resp.StatusCode, b)
			}
		}
		resp, err := http.Post(e.plain.URL+"/ct/v1/get-sth", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST get-sth: %d, want 405", resp.StatusCode)
		}
	})
}

// logTEscapeB64 is base64 of b, query-escaped.
func logTEscapeB64(b []byte) string {
	return strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(base64.StdEncoding.EncodeToString(b))
}

// TestLogSignerFailure: when the log key cannot sign, a certificate is
// never returned without its proof (500), and the log recovers once the
// key works again.
func TestLogSignerFailure(t *testing.T) {
	e := logTNewEnv(t)
	hc := e.client(nil)
	if _, err := e.sign(hc); err != nil {
		t.Fatal(err)
	}
	e.key.fail.Store(true)
	toks, err := e.join.Create(context.Background(), "spiffe://example.org/agent/log", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := logTCSR(key)
	r, status, body, err := e.post(hc, "/v1/sign", map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr}, key)
	if err != nil || r != nil || status != http.StatusInternalServerError || !strings.Contains(string(body), `"internal"`) {
		t.Fatalf("sign while the log key fails: %d %s %v; want 500 internal", status, body, err)
	}
	e.key.fail.Store(false)
	r, err = e.sign(hc)
	if err != nil {
		t.Fatal(err)
	}
	logTCheck(t, e.key.Public(), r)
	if r.Log.Index != 2 {
		t.Errorf("index %d after the failure, want 2 (the refused response's certificate is logged)", r.Log.Index)
	}
}

// TestLogRestart: a restarted log signs a tree head consistent with the
// last one.
func TestLogRestart(t *testing.T) {
	e := logTNewEnv(t)
	hc := e.client(nil)
	for range 5 {
		if _, err := e.sign(hc); err != nil {
			t.Fatal(err)
		}
	}
	last, err := e.log.Covering(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	st, err := bolt.Open(e.path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	saved, err := st.TreeHead(context.Background())
	if err != nil || saved.TreeSize != last.TreeSize || saved.SHA256RootHash != last.SHA256RootHash {
		t.Fatalf("saved tree head %+v, %v; want the last published one (size %d)", saved, err, last.TreeSize)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	e.open()
	hc = e.client(nil)
	now := e.log.Latest()
	if now.TreeSize < last.TreeSize || now.Timestamp < last.Timestamp {
		t.Fatalf("after the restart: size %d at %d, before %d at %d", now.TreeSize, now.Timestamp, last.TreeSize, last.Timestamp)
	}
	status, _, body := e.get(fmt.Sprintf("/ct/v1/get-sth-consistency?first=%d&second=%d", last.TreeSize, now.TreeSize))
	var cr ct.GetSTHConsistencyResponse
	if status != 200 || json.Unmarshal(body, &cr) != nil {
		t.Fatalf("get-sth-consistency: %d %s", status, body)
	}
	if err := translog.VerifyConsistency(last.TreeSize, now.TreeSize, cr.Consistency, last.SHA256RootHash[:], now.SHA256RootHash[:]); err != nil {
		t.Fatal(err)
	}
	r, err := e.sign(hc)
	if err != nil {
		t.Fatal(err)
	}
	if r.Log.Index != 5 {
		t.Errorf("first index after the restart %d, want 5", r.Log.Index)
	}
	if _, err := e.store.Certificate(context.Background(), r.leaf.SerialNumber.Text(16)); err != nil {
		t.Fatal(err)
	}
}
