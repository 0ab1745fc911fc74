package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
)

// postRaw posts body and decodes a 200 or 201 SignResponse.
func (e *logTEnv) postRaw(t *testing.T, hc *http.Client, path string, body any, key crypto.Signer) (*logTResp, int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(e.https.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return nil, resp.StatusCode, raw
	}
	var r logTResp
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(r.Certificate))
	if block == nil {
		t.Fatalf("no certificate in %s", raw)
	}
	r.leaf = parsePEMCert(t, r.Certificate)
	r.key = key
	return &r, resp.StatusCode, raw
}

// sendAndDrop writes one HTTP/1.1 request for /v1/sign on a new TLS
// connection and closes it without reading the answer: when wait is set,
// only once the token was spent (the answer is lost), otherwise at once
// (the request may or may not be acted on).
func (e *logTEnv) sendAndDrop(t *testing.T, body []byte, tokenHash []byte, wait bool) {
	t.Helper()
	cfg := e.https.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.https.URL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/sign HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	if wait {
		deadline := time.Now().Add(10 * time.Second)
		for {
			tok, err := e.store.JoinToken(context.Background(), tokenHash)
			if err != nil {
				t.Fatal(err)
			}
			if tok.UsedBy != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the dropped request was never acted on")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	conn.Close()
}

// TestSignRetryAfterDroppedConnection: a client whose connection dropped
// after it sent /v1/sign retries with the same token and key and gets the
// certificate already issued (200, same serial, a receipt that verifies);
// with another key the token stays spent (401).
func TestSignRetryAfterDroppedConnection(t *testing.T) {
	e := logTNewEnv(t)
	hc := e.client(nil)
	for _, wait := range []bool{true, false} {
		t.Run(fmt.Sprintf("answer lost %v", wait), func(t *testing.T) {
			toks, err := e.join.Create(context.Background(), "spiffe://example.org/agent/retry", 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256([]byte(toks[0].Token))
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := logTCSR(key)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr})
			e.sendAndDrop(t, body, h[:], wait)
			time.Sleep(50 * time.Millisecond) // let a request in flight finish
			tok, err := e.store.JoinToken(context.Background(), h[:])
			if err != nil {
				t.Fatal(err)
			}
			// The retry, with a new CSR for the same key.
			csr2, err := logTCSR(key)
			if err != nil {
				t.Fatal(err)
			}
			r, status, raw := e.postRaw(t, hc, "/v1/sign", map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr2}, key)
			switch {
			case tok.UsedBy != "" && status != http.StatusOK:
				t.Fatalf("retry after the token was spent: %d %s, want 200", status, raw)
			case tok.UsedBy == "" && status != http.StatusCreated:
				t.Fatalf("retry of a request never acted on: %d %s, want 201", status, raw)
			}
			if serial := hex.EncodeToString(r.leaf.SerialNumber.Bytes()); tok.UsedBy != "" && serial != tok.UsedBy {
				t.Fatalf("retry got serial %s, want %s", serial, tok.UsedBy)
			}
			logTCheck(t, e.key.Public(), r)
			// Once more: still the same certificate.
			r2, status, raw := e.postRaw(t, hc, "/v1/sign", map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr2}, key)
			if status != http.StatusOK || !r2.leaf.Equal(r.leaf) {
				t.Fatalf("second retry: %d %s, want 200 and the same certificate", status, raw)
			}
			// Another key: the token is spent.
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			csr3, _ := logTCSR(other)
			_, status, raw = e.postRaw(t, hc, "/v1/sign", map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr3}, other)
			if status != http.StatusUnauthorized || !strings.Contains(string(raw), api.CodeUnauthorized) {
				t.Fatalf("another key: %d %s, want 401", status, raw)
			}
		})
	}
}

// TestRenewRetryReceipt: a retried renewal gets the child with a receipt
// that verifies, as the first answer had.
func TestRenewRetryReceipt(t *testing.T) {
	e := logTNewEnv(t)
	first, err := e.sign(e.client(nil))
	if err != nil {
		t.Fatal(err)
	}
	cur := &tls.Certificate{Certificate: [][]byte{first.leaf.Raw}, PrivateKey: first.key, Leaf: first.leaf}
	hc := e.client(cur)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := logTCSR(k)
	a, status, raw := e.postRaw(t, hc, "/v1/renew", map[string]string{"csr": csr}, k)
	if status != http.StatusCreated {
		t.Fatalf("renew: %d %s", status, raw)
	}
	b, status, raw := e.postRaw(t, hc, "/v1/renew", map[string]string{"csr": csr}, k)
	if status != http.StatusOK || !b.leaf.Equal(a.leaf) {
		t.Fatalf("retried renewal: %d %s, want 200 and the same child", status, raw)
	}
	logTCheck(t, e.key.Public(), b)
	if b.Log.Index != a.Log.Index {
		t.Fatalf("retry's receipt names index %d, the first %d", b.Log.Index, a.Log.Index)
	}
}
