package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// TestSignResponseHasLength: a certificate answer with its receipt,
// larger than the 2 KB net/http buffers before it chunks, goes out with
// its Content-Length (one piece, no chunk framing).
func TestSignResponseHasLength(t *testing.T) {
	e := logTNewEnv(t)
	toks, err := e.join.Create(context.Background(), "spiffe://example.org/agent/length", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := logTCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"provisioner": "join", "token": toks[0].Token, "csr": csr})
	resp, err := e.client(nil).Post(e.https.URL+"/v1/sign", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("sign: %d %s %v", resp.StatusCode, b, err)
	}
	if len(b) <= 2048 {
		t.Fatalf("the answer is %d bytes, too small to test chunking", len(b))
	}
	if resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) != 0 {
		t.Errorf("Content-Length %d, Transfer-Encoding %q for a body of %d bytes", resp.ContentLength, resp.TransferEncoding, len(b))
	}
}
