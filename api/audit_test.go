package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/logsign"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/translog"
	"github.com/agentca/agentca/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// TestIssuedLineOnlyWithTheCertificate: a certificate is answered only
// with its log receipt. When the receipt cannot be had (here the tree
// head signer never runs, so no tree head covers the certificate before
// the request's deadline), the answer is an error, and the audit line and
// the metric say so too: no "issued" line for a certificate the caller
// never got.
func TestIssuedLineOnlyWithTheCertificate(t *testing.T) {
	h := testHierarchy(t)
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := translog.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Its Run is never started: no tree head is signed.
	tlog, err := logsign.New(ctx, logsign.Options{Store: st, Key: signer, Appended: make(chan struct{}, 1)})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(h.Issuing, h.IssuingKey, h.Root)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.New(ca.Options{TrustDomain: testTD, Issuer: iss, Recorder: st})
	if err != nil {
		t.Fatal(err)
	}
	join, err := jointoken.New("join", st, 15*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := api.NewTrust(testTD, []*x509.Certificate{h.Root}, 1, time.Minute, iss)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	reg := prometheus.NewRegistry()
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust, Log: tlog, LogReader: st, Registry: reg,
		Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
		Provisioners: map[string]*api.Provisioner{"join": {Name: "join", Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: join}}})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := join.Create(context.Background(), "spiffe://"+testTD+"/agent/receipt", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.SignRequest{Provisioner: "join", Token: tokens[0].Token, CSR: csrFor(t, mustKey(t, ca.ECP256), nil)})
	rctx, rcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer rcancel()
	req := httptest.NewRequest(http.MethodPost, "/v1/sign", strings.NewReader(string(body))).WithContext(rctx)
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	srv.HTTPSHandler().ServeHTTP(w, req)

	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("sign without a receipt: %d %s, want 503", w.Code, w.Body)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error != api.CodeUnavailable {
		t.Fatalf("body %s: want error %q", w.Body, api.CodeUnavailable)
	}
	var issuedLines, refusedLines int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != "audit" || m["op"] != "sign" {
			continue
		}
		switch m["outcome"] {
		case "issued":
			issuedLines++
		case "refused":
			if m["error"] == api.CodeUnavailable {
				refusedLines++
			}
		}
	}
	if issuedLines != 0 || refusedLines != 1 {
		t.Fatalf("audit lines: %d issued, %d refused (unavailable); want 0 and 1:\n%s", issuedLines, refusedLines, logs)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sawRefusal bool
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "issued" && (m.GetCounter().GetValue() > 0 || m.GetHistogram().GetSampleCount() > 0) {
					t.Errorf("metric %s counts an issuance: %v", mf.GetName(), m)
				}
				if l.GetName() == "outcome" && l.GetValue() == api.CodeUnavailable {
					sawRefusal = true
				}
			}
		}
	}
	if !sawRefusal {
		t.Error("no metric sample with outcome unavailable")
	}
}
