package api_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/wire"
)

// FuzzDecodeSignRequest feeds arbitrary bodies and content types to
// DecodeSignRequest: it must never panic, every error must be a 4xx
// *api.Error with a code and a message, and what it accepts must be a
// complete request with a verified CSR. Seeds are in
// testdata/fuzz/FuzzDecodeSignRequest.
func FuzzDecodeSignRequest(f *testing.F) {
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		f.Fatal(err)
	}
	valid, err := json.Marshal(wire.SignRequest{Provisioner: "join", Token: "t", CSR: csrFor(f, key, nil), TTL: "5m"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "application/json")
	f.Add(valid[:len(valid)/3], "application/json")
	f.Add([]byte("\x00\xff garbage"), "")
	f.Add(append(valid, bytes.Repeat([]byte(" "), api.MaxBody)...), "application/json")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/sign", bytes.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		req, csr, ttl, e := api.DecodeSignRequest(w, r)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" {
				t.Fatalf("error %d %q %q is not a complete 4xx api.Error", e.Status, e.Code, e.Message)
			}
			if csr != nil || ttl != 0 {
				t.Fatalf("error %v came with a CSR or a TTL", e)
			}
			if len(body) > api.MaxBody && e.Status != http.StatusRequestEntityTooLarge && e.Status != http.StatusUnsupportedMediaType {
				t.Fatalf("a %d-byte body got %d, want 413", len(body), e.Status)
			}
			return
		}
		if len(body) > api.MaxBody {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		if req == nil || csr == nil || req.Provisioner == "" || req.Token == "" || req.CSR == "" {
			t.Fatalf("accepted an incomplete request: %+v", req)
		}
		if ttl < 0 || (req.TTL == "" && ttl != 0) || (req.TTL != "" && ttl <= 0) {
			t.Fatalf("ttl %s for %q", ttl, req.TTL)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR with a bad signature: %v", err)
		}
		if err := ca.CheckPublicKey(csr.PublicKey); err != nil {
			t.Fatalf("accepted a CSR with a refused key: %v", err)
		}
		if _, err := x509.ParseCertificateRequest(csr.Raw); err != nil {
			t.Fatalf("accepted CSR does not re-parse: %v", err)
		}
	})
}
