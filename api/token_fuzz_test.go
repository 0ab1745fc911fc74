package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
)

// FuzzParseTokenRequest feeds arbitrary bodies and content types to the
// token request parser: it must never panic, and whatever it accepts has
// a grant, a scope and a target within the limits.
func FuzzParseTokenRequest(f *testing.F) {
	f.Add([]byte("grant_type=client_credentials&scope=tools.read&resource=https%3A%2F%2Ftools.example.org"), "application/x-www-form-urlencoded")
	f.Add([]byte("grant_type=client_credentials&scope=a+b+a&audience=x&audience=y&task=t-1&ttl=30s"), "application/x-www-form-urlencoded; charset=utf-8")
	f.Add([]byte("grant_type=client_credentials&scope=%zz"), "application/x-www-form-urlencoded")
	f.Add([]byte(`{"grant_type":"client_credentials"}`), "application/json")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", contentType)
		req, e := api.ParseTokenRequest(httptest.NewRecorder(), r, time.Hour)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("error %+v is not a 4xx OAuth error", e)
			}
			return
		}
		if len(req.Scope) == 0 || len(req.Audience) == 0 || len(req.Audience) > 8 || req.TTL < 0 || req.TTL > time.Hour {
			t.Fatalf("accepted %+v", req)
		}
	})
}
