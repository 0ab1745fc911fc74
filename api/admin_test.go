package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/wire"
)

func (e *env) adminPost(path string, v any) *response {
	e.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	return do(e.t, http.DefaultClient, http.MethodPost, e.admin.URL+path, "application/json", bytes.NewReader(b))
}

var tokenRE = regexp.MustCompile(`^agentca-jt-[A-Za-z0-9_-]{43}$`)

func TestAdminCreateTokens(t *testing.T) {
	const id = "spiffe://example.org/agent/admin"
	tests := []struct {
		name    string
		req     wire.TokenRequest
		want    int
		wantTTL time.Duration
	}{
		{"one", wire.TokenRequest{SPIFFEID: id}, 1, 15 * time.Minute},
		{"count zero means one", wire.TokenRequest{SPIFFEID: id, Count: 0}, 1, 15 * time.Minute},
		{"several", wire.TokenRequest{SPIFFEID: id, Count: 25}, 25, 15 * time.Minute},
		{"ttl", wire.TokenRequest{SPIFFEID: id, TTL: "2h"}, 1, 2 * time.Hour},
		{"ttl at the ceiling", wire.TokenRequest{SPIFFEID: id, TTL: "24h"}, 1, 24 * time.Hour},
		{"named provisioner", wire.TokenRequest{SPIFFEID: id, Provisioner: "join"}, 1, 15 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			now := e.clock.Now().UTC()
			r := e.adminPost("/admin/v1/tokens", tt.req)
			if r.status != http.StatusCreated {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var resp wire.TokenResponse
			if err := json.Unmarshal(r.body, &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp.Tokens) != tt.want {
				t.Fatalf("%d tokens, want %d", len(resp.Tokens), tt.want)
			}
			seen := map[string]bool{}
			for _, tok := range resp.Tokens {
				if !tokenRE.MatchString(tok.Token) || seen[tok.Token] {
					t.Fatalf("token %q malformed or repeated", tok.Token)
				}
				seen[tok.Token] = true
				if tok.SPIFFEID != id || tok.Provisioner != "join" || !tok.ExpiresAt.Equal(now.Add(tt.wantTTL)) {
					t.Fatalf("token = %+v, want %s by join expiring at %s", tok, id, now.Add(tt.wantTTL))
				}
				rec, err := e.store.JoinToken(context.Background(), jointoken.Hash(tok.Token))
				if err != nil || rec.SPIFFEID != id {
					t.Fatalf("token not stored: %+v %v", rec, err)
				}
			}
			// A created token enrolls.
			key := mustKey(t, ca.ECP256)
			s := e.postJSON(e.client(nil), "/v1/sign", wire.SignRequest{Provisioner: "join", Token: resp.Tokens[0].Token, CSR: csrFor(t, key, nil)})
			if s.status != http.StatusCreated {
				t.Fatalf("sign with an admin token: %d %s", s.status, s.body)
			}
		})
	}
}

func TestAdminCreateTokensRefusals(t *testing.T) {
	const id = "spiffe://example.org/agent/admin"
	tests := []struct {
		name   string
		body   any
		extra  []string
		status int
		code   string
	}{
		{"no SPIFFE ID", wire.TokenRequest{}, nil, 400, api.CodeBadRequest},
		{"not a SPIFFE ID", wire.TokenRequest{SPIFFEID: "agent"}, nil, 400, api.CodeBadRequest},
		{"other trust domain", wire.TokenRequest{SPIFFEID: "spiffe://other.org/agent"}, nil, 400, api.CodeBadRequest},
		{"no path", wire.TokenRequest{SPIFFEID: "spiffe://example.org"}, nil, 400, api.CodeBadRequest},
		{"empty segment", wire.TokenRequest{SPIFFEID: "spiffe://example.org/a//b"}, nil, 400, api.CodeBadRequest},
		{"negative count", wire.TokenRequest{SPIFFEID: id, Count: -1}, nil, 400, api.CodeBadRequest},
		{"count above the limit", wire.TokenRequest{SPIFFEID: id, Count: api.MaxTokensPerRequest + 1}, nil, 400, api.CodeBadRequest},
		{"bad ttl", wire.TokenRequest{SPIFFEID: id, TTL: "forever"}, nil, 400, api.CodeBadTTL},
		{"zero ttl", wire.TokenRequest{SPIFFEID: id, TTL: "0s"}, nil, 400, api.CodeBadTTL},
		{"ttl above 24h", wire.TokenRequest{SPIFFEID: id, TTL: "25h"}, nil, 400, api.CodeBadTTL},
		{"unknown provisioner", wire.TokenRequest{SPIFFEID: id, Provisioner: "k8s"}, nil, 400, api.CodeUnknownProvisioner},
		// Two join-token provisioners and none named: the handler must
		// not pick one at random (map order).
		{"ambiguous provisioner", wire.TokenRequest{SPIFFEID: id}, []string{"join2"}, 400, api.CodeBadRequest},
		{"unknown field", []byte(`{"spiffe_id":"` + id + `","admin":true}`), nil, 400, api.CodeBadRequest},
		{"not JSON", []byte(`spiffe_id=x`), nil, 400, api.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOptions{extra: tt.extra})
			r := e.adminPost("/admin/v1/tokens", tt.body)
			apiError(t, r, tt.status, tt.code)
		})
	}
	t.Run("named among several", func(t *testing.T) {
		e := newEnv(t, envOptions{extra: []string{"join2"}})
		r := e.adminPost("/admin/v1/tokens", wire.TokenRequest{SPIFFEID: id, Provisioner: "join2"})
		if r.status != http.StatusCreated {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var resp wire.TokenResponse
		if err := json.Unmarshal(r.body, &resp); err != nil || resp.Tokens[0].Provisioner != "join2" {
			t.Fatalf("response %s, %v", r.body, err)
		}
	})
	t.Run("GET tokens", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		apiError(t, do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/admin/v1/tokens", "", nil), 405, api.CodeMethodNotAllowed)
	})
}

type certList struct {
	Certificates []wire.CertInfo `json:"certificates"`
}

func TestAdminListCerts(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	var serials []string
	for i := range 7 {
		id := "spiffe://example.org/agent/a"
		if i%2 == 1 {
			id = "spiffe://example.org/agent/b"
		}
		got, err := e.authority.Issue(ctx, &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(), SPIFFEID: id, Provisioner: "join"})
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, got.Serial)
	}
	sort.Strings(serials) // equal-length hex: string order is numeric order

	list := func(q url.Values) certList {
		t.Helper()
		r := do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/admin/v1/certs?"+q.Encode(), "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET certs?%s: %d %s", q.Encode(), r.status, r.body)
		}
		var l certList
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatal(err)
		}
		return l
	}

	all := list(url.Values{})
	if len(all.Certificates) != 7 {
		t.Fatalf("%d certificates, want 7", len(all.Certificates))
	}
	for i, c := range all.Certificates {
		if c.Serial != serials[i] || c.Provisioner != "join" || c.Revoked || c.IssuerSKI == "" || !c.NotAfter.After(c.NotBefore) {
			t.Fatalf("certificate %d = %+v, want serial %s", i, c, serials[i])
		}
	}

	// Pages of 3 cover every certificate once, in order.
	var paged []string
	after := ""
	for page := 0; ; page++ {
		q := url.Values{"limit": {"3"}}
		if after != "" {
			q.Set("after", after)
		}
		l := list(q)
		if len(l.Certificates) > 3 {
			t.Fatalf("page of %d, limit 3", len(l.Certificates))
		}
		if len(l.Certificates) == 0 {
			break
		}
		for _, c := range l.Certificates {
			paged = append(paged, c.Serial)
		}
		after = l.Certificates[len(l.Certificates)-1].Serial
		if page > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(paged) != 7 {
		t.Fatalf("paging returned %v, want %v", paged, serials)
	}
	for i := range paged {
		if paged[i] != serials[i] {
			t.Fatalf("paging returned %v, want %v", paged, serials)
		}
	}

	b := list(url.Values{"spiffe_id": {"spiffe://example.org/agent/b"}})
	if len(b.Certificates) != 3 {
		t.Fatalf("%d certificates for agent/b, want 3", len(b.Certificates))
	}
	for _, c := range b.Certificates {
		if c.SPIFFEID != "spiffe://example.org/agent/b" {
			t.Fatalf("filter returned %s", c.SPIFFEID)
		}
	}
	if none := list(url.Values{"spiffe_id": {"spiffe://example.org/nobody"}}); len(none.Certificates) != 0 {
		t.Fatalf("%d certificates for nobody", len(none.Certificates))
	}
	if r := do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/admin/v1/certs?spiffe_id=spiffe://example.org/nobody", "", nil); !bytes.Contains(r.body, []byte(`"certificates":[]`)) {
		t.Errorf("an empty list is not []: %s", r.body)
	}

	for _, q := range []string{"limit=0", "limit=-1", "limit=10001", "limit=ten", "after=xyz", "after=-5"} {
		t.Run("refuses "+q, func(t *testing.T) {
			apiError(t, do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/admin/v1/certs?"+q, "", nil), 400, api.CodeBadRequest)
		})
	}
	t.Run("limit 10000 accepted", func(t *testing.T) {
		if l := list(url.Values{"limit": {strconv.Itoa(10000)}}); len(l.Certificates) != 7 {
			t.Fatalf("%d certificates", len(l.Certificates))
		}
	})
}

func TestAdminRouting(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/health", "", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"status":"ok"`)) {
		t.Fatalf("admin /health: %d %s", r.status, r.body)
	}
	apiError(t, do(t, http.DefaultClient, http.MethodGet, e.admin.URL+"/v1/sign", "", nil), 404, api.CodeNotFound)
	apiError(t, do(t, http.DefaultClient, http.MethodPost, e.admin.URL+"/admin/v1/certs", "", nil), 405, api.CodeMethodNotAllowed)
}
