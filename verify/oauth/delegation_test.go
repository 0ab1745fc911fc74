package oauth_test

import (
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/verify"
	"github.com/agentca/agentca/verify/oauth"
)

// delegating replaces the world's middleware by one that accepts
// delegated tokens, reusing task statuses for taskAge.
func (w *world) delegating(taskAge time.Duration) {
	w.t.Helper()
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: []*x509.Certificate{w.h.Root}, DisableRevocation: true,
		Now: w.clockNow})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { v.Close() })
	m, err := oauth.New(oauth.Options{Verifier: v, Issuer: w.issuer, Audience: audience, Scopes: []string{"tools.read"},
		HTTPClient: w.hc, Leeway: -1, Now: w.clockNow, AllowDelegation: true, TaskMaxAge: taskAge})
	if err != nil {
		w.t.Fatal(err)
	}
	w.mw = m
	w.handler = m.Wrap(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c := oauth.FromContext(r.Context())
		_, _ = io.WriteString(rw, c.SPIFFEID+"|"+c.Subject+"|"+c.SubjectIssuer+"|"+strings.Join(c.Actors, ",")+"|"+c.Task)
	}))
}

// delegated are claims of a token for user, acted on by B (the
// certificate b, newest) after A.
func (w *world) delegated() map[string]any {
	c := w.claims(w.b)
	c["sub"], c["subject_issuer"] = "alice", "https://idp.example"
	c["act"] = map[string]any{"sub": idB, "act": map[string]any{"sub": idA}}
	return c
}

func TestDelegatedToken(t *testing.T) {
	w := newWorld(t)
	tok := "Bearer " + w.sign(w.delegated(), w.key, "at+jwt", w.kid)
	// The default middleware refuses delegation.
	if rec := w.do(w.b, tok); rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "delegated") {
		t.Fatalf("a delegated token without AllowDelegation: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	w.delegating(time.Second)
	rec := w.do(w.b, tok)
	if want := idB + "|alice|https://idp.example|" + idB + "," + idA + "|t-1"; rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("delegated token: %d %q, want %q", rec.Code, rec.Body, want)
	}
	// With A's certificate: the cnf names B's, and A is not the newest actor.
	if rec := w.do(w.a, tok); rec.Code != 401 {
		t.Fatalf("presented with A's certificate: %d %s", rec.Code, rec.Body)
	}
	// The newest actor must be the certificate's SPIFFE ID, even with
	// the right cnf.
	c := w.delegated()
	c["act"] = map[string]any{"sub": idA, "act": map[string]any{"sub": idB}}
	if rec := w.do(w.b, "Bearer "+w.sign(c, w.key, "at+jwt", w.kid)); rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "actor") {
		t.Fatalf("actor not the certificate: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	for name, act := range map[string]any{"no sub": map[string]any{"act": map[string]any{"sub": idA}}, "a string": "x",
		"empty sub": map[string]any{"sub": ""}} {
		c := w.delegated()
		c["act"] = act
		if rec := w.do(w.b, "Bearer "+w.sign(c, w.key, "at+jwt", w.kid)); rec.Code != 401 {
			t.Errorf("act %s: %d %s", name, rec.Code, rec.Body)
		}
	}
}

// TestTaskEndedRefusedWithinMaxAge: a task the CA says has ended is
// refused once the cached status is older than TaskMaxAge, and statuses
// are fetched once per max age, not per request.
func TestTaskEndedRefusedWithinMaxAge(t *testing.T) {
	w := newWorld(t)
	w.delegating(2 * time.Second)
	tok := "Bearer " + w.sign(w.delegated(), w.key, "at+jwt", w.kid)
	for range 5 {
		if rec := w.do(w.b, tok); rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	if n := w.taskFetches.Load(); n != 1 {
		t.Fatalf("%d task status fetches for 5 requests within the max age, want 1", n)
	}
	w.ended.Store("t-1", true)
	if rec := w.do(w.b, tok); rec.Code != 200 {
		t.Fatalf("within the max age the cached status holds: %d", rec.Code)
	}
	w.setNow(w.now.Add(2 * time.Second))
	rec := w.do(w.b, tok)
	if rec.Code != 401 || !strings.Contains(rec.Header().Get("WWW-Authenticate"), "task has ended") {
		t.Fatalf("after the max age: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	// A direct token of the same task is refused too.
	if rec := w.do(w.a, "Bearer "+w.sign(w.claims(w.a), w.key, "at+jwt", w.kid)); rec.Code != 401 {
		t.Fatalf("a direct token of the ended task: %d", rec.Code)
	}
}

// TestTaskStatusUnavailable: no task status, no verdict: 503.
func TestTaskStatusUnavailable(t *testing.T) {
	w := newWorld(t)
	c := w.claims(w.a)
	c["task"] = "t-2"
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: []*x509.Certificate{w.h.Root}, DisableRevocation: true, Now: w.clockNow})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	m, err := oauth.New(oauth.Options{Verifier: v, Issuer: w.issuer, Audience: audience,
		HTTPClient: w.hc, Leeway: -1, Now: w.clockNow, TaskStatusURL: w.issuer + "/missing"})
	if err != nil {
		t.Fatal(err)
	}
	w.handler = m.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	if rec := w.do(w.a, "Bearer "+w.sign(c, w.key, "at+jwt", w.kid)); rec.Code != 503 {
		t.Fatalf("task status unreachable: %d %s", rec.Code, rec.Body)
	}
}
