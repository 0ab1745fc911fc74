package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentca/agentca/agent"
)

// jwtTToken is a token-shaped string (the helpers do not verify it).
const jwtTToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJhdWQiOiJhZ2VudGNhIn0.c2lnbmF0dXJl"

func jwtTFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agentca")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestK8sToken(t *testing.T) {
	if agent.DefaultK8sTokenPath != "/var/run/secrets/tokens/agentca" {
		t.Errorf("DefaultK8sTokenPath = %s", agent.DefaultK8sTokenPath)
	}
	tests := []struct {
		name, content, want string
	}{
		{"token", jwtTToken, ""},
		{"trailing newline", jwtTToken + "\n", ""},
		{"empty", "", "empty"},
		{"not a JWT", "hello", "not a JWT"},
		{"two tokens", jwtTToken + "\n" + jwtTToken, "not a JWT"},
		{"too large", strings.Repeat("a", 64<<10+1), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := agent.K8sToken(jwtTFile(t, tt.content))
			if tt.want == "" {
				if err != nil || tok != jwtTToken {
					t.Fatalf("K8sToken = %q, %v", tok, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := agent.K8sToken(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

// jwtTGCPMetadata is the Compute Engine metadata server's identity
// endpoint, strict the way the real one is: the Metadata-Flavor header
// and an audience are required.
func jwtTGCPMetadata(t *testing.T, answer func(w http.ResponseWriter)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/computeMetadata/v1/instance/service-accounts/default/identity" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Metadata-Flavor") != "Google" {
			w.Header().Set("Metadata-Flavor", "Google")
			http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
			return
		}
		q := r.URL.Query()
		if q.Get("audience") == "" {
			http.Error(w, "non-empty audience parameter required", http.StatusBadRequest)
			return
		}
		if q.Get("audience") != "https://ca.example.org:8443" || q.Get("format") != "full" {
			t.Errorf("query = %s", r.URL.RawQuery)
		}
		w.Header().Set("Metadata-Flavor", "Google")
		w.Header().Set("Content-Type", "text/html")
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestGCPIdentityToken(t *testing.T) {
	ctx := context.Background()
	srv := jwtTGCPMetadata(t, func(w http.ResponseWriter) { w.Write([]byte(jwtTToken)) })
	tok, err := agent.GCPIdentityToken(ctx, srv.URL+"/", "https://ca.example.org:8443")
	if err != nil || tok != jwtTToken {
		t.Fatalf("GCPIdentityToken = %q, %v", tok, err)
	}
	if _, err := agent.GCPIdentityToken(ctx, srv.URL, ""); err == nil {
		t.Error("empty audience accepted")
	}
	for name, answer := range map[string]func(w http.ResponseWriter){
		"500":       func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) },
		"not a JWT": func(w http.ResponseWriter) { w.Write([]byte("<html>hello</html>")) },
		"redirect": func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://elsewhere.example/")
			w.WriteHeader(http.StatusFound)
		},
		"huge": func(w http.ResponseWriter) { w.Write([]byte(strings.Repeat("a", 1<<20))) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := jwtTGCPMetadata(t, answer)
			if tok, err := agent.GCPIdentityToken(ctx, srv.URL, "https://ca.example.org:8443"); err == nil {
				t.Fatalf("accepted %q", tok)
			}
		})
	}
	for _, bad := range []string{"metadata.google.internal", "ftp://x", "http://", "http://x?y=1"} {
		if _, err := agent.GCPIdentityToken(ctx, bad, "a"); err == nil {
			t.Errorf("metadata URL %q accepted", bad)
		}
	}
}

// jwtTIMDS is Azure IMDS's managed-identity token endpoint: the Metadata
// header, api-version and resource are required, errors are OAuth2 JSON.
func jwtTIMDS(t *testing.T, answer func(w http.ResponseWriter)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/metadata/identity/oauth2/token" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		q := r.URL.Query()
		if r.Header.Get("Metadata") != "true" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request","error_description":"Required metadata header not specified"}`))
			return
		}
		if q.Get("api-version") != "2018-02-01" || q.Get("resource") != "api://agentca" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request","error_description":"bad query ` + r.URL.RawQuery + `"}`))
			return
		}
		answer(w)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAzureMSIToken(t *testing.T) {
	ctx := context.Background()
	ok := func(w http.ResponseWriter) {
		json.NewEncoder(w).Encode(map[string]string{
			"access_token": jwtTToken, "client_id": "bdb6a5a2-3c4d-4e5f-8a6b-7c8d9e0f1a2b",
			"expires_in": "86399", "expires_on": "1709366399", "ext_expires_in": "86399", "not_before": "1709279699",
			"resource": "api://agentca", "token_type": "Bearer",
		})
	}
	srv := jwtTIMDS(t, ok)
	tok, err := agent.AzureMSIToken(ctx, srv.URL, "api://agentca")
	if err != nil || tok != jwtTToken {
		t.Fatalf("AzureMSIToken = %q, %v", tok, err)
	}
	if _, err := agent.AzureMSIToken(ctx, srv.URL, ""); err == nil {
		t.Error("empty resource accepted")
	}
	for name, c := range map[string]struct {
		answer func(w http.ResponseWriter)
		want   string
	}{
		"identity not found": {func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request","error_description":"Identity not found"}`))
		}, "Identity not found"},
		"no access_token": {func(w http.ResponseWriter) { w.Write([]byte(`{"token_type":"Bearer"}`)) }, "no access_token"},
		"not JSON":        {func(w http.ResponseWriter) { w.Write([]byte(`<html>`)) }, "azure msi token"},
		"not a JWT":       {func(w http.ResponseWriter) { w.Write([]byte(`{"access_token":"opaque"}`)) }, "not a JWT"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := jwtTIMDS(t, c.answer)
			if _, err := agent.AzureMSIToken(ctx, srv.URL, "api://agentca"); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := agent.AzureMSIToken(canceled, srv.URL, "api://agentca"); err == nil {
		t.Error("canceled context succeeded")
	}
}
