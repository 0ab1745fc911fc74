package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
)

// FuzzParseExchangeRequest feeds arbitrary bodies and content types to
// the token exchange parser: never a panic, a refusal is a 4xx OAuth
// error, and what it accepts has a subject token, its type and a target
// within the limits.
func FuzzParseExchangeRequest(f *testing.F) {
	f.Add([]byte("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&audience=spiffe%3A%2F%2Fexample.org%2Fagent%2Fb"), "application/x-www-form-urlencoded")
	f.Add([]byte("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x&subject_token_type=t&actor_token=y&scope=a+b&resource=https://t.example&ttl=30s"), "application/x-www-form-urlencoded")
	f.Add([]byte("grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x&subject_token=y"), "application/x-www-form-urlencoded")
	f.Add([]byte(`{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange"}`), "application/json")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", contentType)
		req, e := api.ParseExchangeRequest(httptest.NewRecorder(), r, time.Hour)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("error %+v is not a 4xx OAuth error", e)
			}
			return
		}
		if req.SubjectToken == "" || req.SubjectTokenType == "" || len(req.Audience) == 0 || len(req.Audience) > 8 ||
			len(req.Scope) > 32 || req.TTL < 0 || req.TTL > time.Hour || (req.ActorToken == "") != (req.ActorTokenType == "") {
			t.Fatalf("accepted %+v", req)
		}
	})
}
