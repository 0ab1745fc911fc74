package translog

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	ct "github.com/google/certificate-transparency-go"
	"github.com/google/certificate-transparency-go/client"
	"github.com/google/certificate-transparency-go/jsonclient"
	ctx509 "github.com/google/certificate-transparency-go/x509"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// testLog is the smallest CT v1 log over translog: what the store and the
// HTTP listener do, in memory, so the CT project's own client can check
// the encodings end to end.
type testLog struct {
	signer *Signer
	issuer []byte

	mu      sync.Mutex
	state   State
	nodes   MemoryNodes
	inputs  [][]byte
	byHash  map[string]uint64
	sth     *ct.SignedTreeHead
	history []*ct.SignedTreeHead
}

// append logs a batch of certificates in one "transaction".
func (l *testLog) append(t *testing.T, certs [][]byte, ts uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	hashes := make([][]byte, len(certs))
	for i, der := range certs {
		leaf, err := NewLeaf(der, ts)
		if err != nil {
			t.Fatal(err)
		}
		hashes[i] = leaf.Hash
		l.byHash[string(leaf.Hash)] = uint64(len(l.inputs))
		l.inputs = append(l.inputs, leaf.Input)
	}
	st, err := l.state.Append(hashes, l.nodes.Put)
	if err != nil {
		t.Fatal(err)
	}
	l.state = st
	if l.sth, err = l.signer.Sign(st, ts+1); err != nil {
		t.Fatal(err)
	}
	l.history = append(l.history, l.sth)
}

func (l *testLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx := r.Context()
	q := r.URL.Query()
	num := func(k string) uint64 {
		n, err := strconv.ParseUint(q.Get(k), 10, 64)
		if err != nil {
			panic(err)
		}
		return n
	}
	var resp any
	var err error
	switch r.URL.Path {
	case ct.GetSTHPath:
		resp, err = STHResponse(l.sth)
	case ct.GetSTHConsistencyPath:
		var p [][]byte
		p, err = ConsistencyProof(ctx, &l.nodes, num("first"), num("second"))
		resp = ct.GetSTHConsistencyResponse{Consistency: p}
	case ct.GetProofByHashPath:
		h, _ := base64.StdEncoding.DecodeString(q.Get("hash"))
		index, ok := l.byHash[string(h)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		var p [][]byte
		p, err = InclusionProof(ctx, &l.nodes, index, num("tree_size"))
		resp = ct.GetProofByHashResponse{LeafIndex: int64(index), AuditPath: p}
	case ct.GetEntriesPath:
		var e ct.GetEntriesResponse
		extra, _ := ExtraData([][]byte{l.issuer})
		for i := num("start"); i <= num("end") && i < uint64(len(l.inputs)); i++ {
			e.Entries = append(e.Entries, ct.LeafEntry{LeafInput: l.inputs[i], ExtraData: extra})
		}
		resp = e
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// TestCTClient: the CT project's client verifies our tree heads, finds
// each certificate by the leaf hash it computes itself from the chain and
// timestamp, and accepts our proofs and entries.
func TestCTClient(t *testing.T) {
	key := newP256(t)
	signer, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	var certs [][]byte
	var issuer []byte
	for range 23 {
		var der []byte
		der, issuer = testCert(t, "spiffe://example.org/agent/x")
		certs = append(certs, der)
	}
	log := &testLog{signer: signer, issuer: issuer, byHash: map[string]uint64{}}
	// Batches of 1, 2, 4, 16: timestamps per batch.
	times := map[int]uint64{}
	for i, batch := 0, 1; i < len(certs); i, batch = i+batch, batch*2 {
		end := min(i+batch, len(certs))
		ts := 1767225600000 + uint64(i)
		log.append(t, certs[i:end], ts)
		for j := i; j < end; j++ {
			times[j] = ts
		}
	}
	srv := httptest.NewServer(log)
	defer srv.Close()

	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL, srv.Client(), jsonclient.Options{PublicKeyDER: spki})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	sth, err := c.GetSTH(ctx) // checks the signature with log.pub
	if err != nil {
		t.Fatalf("ct client GetSTH: %v", err)
	}
	if sth.TreeSize != uint64(len(certs)) || sth.SHA256RootHash != log.sth.SHA256RootHash {
		t.Fatalf("ct client got STH %v, want %v", sth, log.sth)
	}

	parsedIssuer, err := ctx509.ParseCertificate(issuer)
	if err != nil {
		t.Fatal(err)
	}
	for i, der := range certs {
		cert, err := ctx509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		// What `ctclient get-inclusion-proof --cert_chain --timestamp` does.
		leaf, err := ct.MerkleTreeLeafFromChain([]*ctx509.Certificate{cert, parsedIssuer}, ct.X509LogEntryType, times[i])
		if err != nil {
			t.Fatal(err)
		}
		hash, err := ct.LeafHashForLeaf(leaf)
		if err != nil {
			t.Fatal(err)
		}
		rsp, err := c.GetProofByHash(ctx, hash[:], sth.TreeSize)
		if err != nil {
			t.Fatalf("certificate %d: GetProofByHash: %v", i, err)
		}
		if rsp.LeafIndex != int64(i) {
			t.Fatalf("certificate %d found at index %d", i, rsp.LeafIndex)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), sth.TreeSize, hash[:], rsp.AuditPath, sth.SHA256RootHash[:]); err != nil {
			t.Fatalf("certificate %d: %v", i, err)
		}
	}

	for _, old := range log.history {
		p, err := c.GetSTHConsistency(ctx, old.TreeSize, sth.TreeSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyConsistency(old.TreeSize, sth.TreeSize, p, old.SHA256RootHash[:], sth.SHA256RootHash[:]); err != nil {
			t.Fatalf("ct client consistency %d → %d: %v", old.TreeSize, sth.TreeSize, err)
		}
	}

	entries, err := c.GetEntries(ctx, 0, int64(len(certs)-1))
	if err != nil {
		t.Fatalf("ct client GetEntries: %v", err)
	}
	if len(entries) != len(certs) {
		t.Fatalf("GetEntries returned %d entries, want %d", len(entries), len(certs))
	}
	for i, e := range entries {
		if e.X509Cert == nil || !bytes.Equal(e.X509Cert.Raw, certs[i]) || e.Leaf.TimestampedEntry.Timestamp != times[i] {
			t.Errorf("entry %d is not certificate %d at %d", i, i, times[i])
		}
		if len(e.Chain) != 1 || !bytes.Equal(e.Chain[0].Data, issuer) {
			t.Errorf("entry %d: chain not returned", i)
		}
	}
}
