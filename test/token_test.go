package test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
)

// TestJoinTokenSingleUse checks that a join token enrolls exactly once:
// through the CLI twice in a row, and through sixteen concurrent
// POST /v1/sign requests.
func TestJoinTokenSingleUse(t *testing.T) {
	t.Parallel()
	ca := newCA(t, caOptions{})
	ca.start()

	t.Run("enroll twice", func(t *testing.T) {
		const id = "spiffe://example.org/agent/twice"
		tok := ca.token(id)
		first := filepath.Join(t.TempDir(), "first")
		if r := ca.enroll(tok, first); r.code != 0 {
			t.Fatalf("first enroll: %s", r)
		}
		second := filepath.Join(t.TempDir(), "second")
		r := ca.enroll(tok, second)
		if r.code != 1 {
			t.Errorf("second enroll with the same token: want exit 1:\n%s", r)
		}
		oneLine(t, r)
		if _, err := loadCreds(second); err == nil {
			t.Errorf("the refused enroll wrote credentials in %s", second)
		}
		if got := ca.certs(id); len(got) != 1 {
			t.Errorf("%d certificates recorded for %s, want 1: %+v", len(got), id, got)
		}
	})

	t.Run("16 concurrent", func(t *testing.T) {
		const id = "spiffe://example.org/agent/race"
		const n = 16
		tok := ca.token(id)
		// Every request has its own key and CSR, made before the start.
		bodies := make([]map[string]string, n)
		for i := range bodies {
			bodies[i] = signBody("join", tok, csrPEM(t, newECKey(t), nil), "")
		}
		hc := ca.client(nil)
		defer hc.CloseIdleConnections()
		resps := make([]apiResp, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				b, _ := json.Marshal(bodies[i])
				resps[i], errs[i] = tryDo(hc, http.MethodPost, ca.URL+"/v1/sign", "application/json", bytes.NewReader(b))
			}()
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		created, refused := 0, 0
		var msgs = map[string]bool{}
		for i, r := range resps {
			switch r.status {
			case http.StatusCreated:
				created++
				_, leaf := wantIssued(t, r)
				if got := spiffeIDOf(t, leaf); got != id {
					t.Errorf("request %d: issued %s, want %s", i, got, id)
				}
			case http.StatusUnauthorized:
				refused++
				msgs[wantError(t, r, http.StatusUnauthorized, "unauthorized").Message] = true
			default:
				t.Errorf("request %d: unexpected %d %s", i, r.status, r.body)
			}
		}
		if created != 1 || refused != n-1 {
			t.Errorf("%d created and %d refused with 401, want 1 and %d", created, refused, n-1)
		}
		if len(msgs) > 1 {
			t.Errorf("the refusals carry different messages: %v", msgs)
		}
		if got := ca.certs(id); len(got) != 1 {
			t.Errorf("%d certificates recorded for %s, want 1: %+v", len(got), id, got)
		}
		resp := do(t, hc, http.MethodGet, ca.URL+"/health", "", nil)
		if resp.status != http.StatusOK {
			t.Errorf("/health after the race: %d %s", resp.status, resp.body)
		}
	})
}
