package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/api"
	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/provisioners/jointoken"
	"github.com/agentca/agentca/store/bolt"
	"github.com/agentca/agentca/wire"
)

// clientTestCA is a CA in the test process: a hierarchy, a bolt store, an
// authority, a join-token provisioner and the API's HTTPS handler on an
// httptest TLS server whose certificate the CA issued itself, so it
// chains to the root as the daemon's does.
type clientTestCA struct {
	h         *ca.Hierarchy
	authority *ca.Authority
	join      *jointoken.Provisioner
	ts        *httptest.Server
	roots     []*x509.Certificate
	pool      *x509.CertPool
}

func startClientTestCA(t *testing.T) *clientTestCA {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, h := testca.Authority(t, "agent-test", st, nil)
	join, err := jointoken.New("join", st, 15*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := api.NewTrust("example.org", []*x509.Certificate{h.Root}, 1, time.Minute, authority.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Authority: authority, Store: st, Trust: trust,
		Provisioners: map[string]*api.Provisioner{"join": {Name: "join", Type: "join-token", DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour, Provisioner: join}}})
	if err != nil {
		t.Fatal(err)
	}
	c := &clientTestCA{h: h, authority: authority, join: join, roots: []*x509.Certificate{h.Root}, pool: x509.NewCertPool()}
	c.pool.AddCert(h.Root)
	c.ts = httptest.NewUnstartedServer(srv.HTTPSHandler())
	c.ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, Certificates: []tls.Certificate{*c.serverCert(t, []string{"127.0.0.1"})}}
	c.ts.StartTLS()
	t.Cleanup(c.ts.Close)
	return c
}

// serverCert issues a TLS server certificate for the given IP SANs.
func (c *clientTestCA) serverCert(t *testing.T, ips []string) *tls.Certificate {
	t.Helper()
	key, err := ca.GenerateKey(ca.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.authority.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/agentca/server",
		IPAddresses: ips, DNSNames: []string{"localhost"}, Provisioner: "agentca-server", CAIdentity: true, TTL: time.Hour, MaxTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{got.DER, c.h.Issuing.Raw}, PrivateKey: key}
}

func (c *clientTestCA) token(t *testing.T, id string) string {
	t.Helper()
	created, err := c.join.Create(context.Background(), id, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	return created[0].Token
}

func (c *clientTestCA) client(t *testing.T) *agent.Client {
	t.Helper()
	cl, err := agent.NewClient(c.ts.URL, c.pool)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func newTestKey(t *testing.T, kt string) crypto.Signer {
	t.Helper()
	k, err := agent.NewKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sameKey(a, b crypto.Signer) bool {
	return a.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Public())
}

func rootFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func TestClientSignAndRenew(t *testing.T) {
	c := startClientTestCA(t)
	cl := c.client(t)
	ctx := context.Background()
	const id = "spiffe://example.org/agent/client"
	key := newTestKey(t, "ed25519")
	cr, err := cl.Sign(ctx, "join", c.token(t, id), key, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if cr.SPIFFEID != id || cr.Leaf.URIs[0].String() != id || !sameKey(cr.Key, key) {
		t.Fatalf("credentials = %+v", cr)
	}
	if cr.Serial != hex.EncodeToString(cr.Leaf.SerialNumber.Bytes()) || !cr.NotAfter.Equal(cr.Leaf.NotAfter) {
		t.Errorf("serial %s / NotAfter %s do not match the leaf", cr.Serial, cr.NotAfter)
	}
	if life := cr.NotAfter.Sub(cr.NotBefore); life != 11*time.Minute {
		t.Errorf("lifetime %s, want 10m + 1m backdate", life)
	}
	if len(cr.Chain) != 1 || !cr.Chain[0].Equal(c.h.Issuing) {
		t.Fatalf("chain = %d certificates, want the issuing CA", len(cr.Chain))
	}
	certs, err := agent.ParseCertificates(cr.CertPEM())
	if err != nil || len(certs) != 2 || !certs[0].Equal(cr.Leaf) || !certs[1].Equal(c.h.Issuing) {
		t.Fatalf("CertPEM = %d certificates, %v; want leaf then issuing CA", len(certs), err)
	}
	tc := cr.TLSCertificate()
	if len(tc.Certificate) != 2 || tc.Leaf != cr.Leaf || !sameKey(tc.PrivateKey.(crypto.Signer), key) {
		t.Fatalf("TLSCertificate = %+v", tc)
	}

	// A certificate renews once: each renewal renews the last one.
	cur := tc
	t.Run("renew with the same key", func(t *testing.T) {
		r, err := cl.Renew(ctx, tc, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.Serial == cr.Serial || r.SPIFFEID != id || !sameKey(r.Key, key) {
			t.Fatalf("renewed = serial %s id %s", r.Serial, r.SPIFFEID)
		}
		cur = r.TLSCertificate()
	})
	t.Run("renew with a new key", func(t *testing.T) {
		nk := newTestKey(t, "ec-p384")
		r, err := cl.Renew(ctx, cur, nk, 20*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !sameKey(r.Key, nk) || !r.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(nk.Public()) || r.SPIFFEID != id {
			t.Fatal("renewed certificate is not for the new key")
		}
		if life := r.NotAfter.Sub(r.NotBefore); life != 21*time.Minute {
			t.Errorf("lifetime %s, want 20m + 1m backdate", life)
		}
	})
	t.Run("renew without a certificate the CA knows", func(t *testing.T) {
		self := &tls.Certificate{Certificate: [][]byte{c.h.Root.Raw}, PrivateKey: c.h.RootKey}
		_, err := cl.Renew(ctx, self, nil, 0)
		var ae *agent.APIError
		if !errors.As(err, &ae) || ae.Status != 401 {
			t.Fatalf("Renew with the root as client certificate = %v, want a 401 APIError", err)
		}
	})
	t.Run("roots", func(t *testing.T) {
		roots, err := cl.Roots(ctx)
		if err != nil || len(roots) != 1 || !roots[0].Equal(c.h.Root) {
			t.Fatalf("Roots = %d, %v", len(roots), err)
		}
	})
}

func TestClientAPIError(t *testing.T) {
	c := startClientTestCA(t)
	cl := c.client(t)
	_, err := cl.Sign(context.Background(), "join", "agentca-jt-"+strings.Repeat("A", 43), newTestKey(t, "ec-p256"), 0)
	var ae *agent.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("Sign with an unknown token = %v, want *APIError", err)
	}
	if ae.Status != http.StatusUnauthorized || ae.Code != "unauthorized" || ae.Message == "" || ae.Temporary() {
		t.Fatalf("APIError = %+v (temporary %v), want 401 unauthorized with a message", ae, ae.Temporary())
	}
	if !strings.Contains(ae.Error(), "401") || !strings.Contains(ae.Error(), "unauthorized") {
		t.Errorf("Error() = %q", ae.Error())
	}
	_, err = cl.Sign(context.Background(), "nope", "t", newTestKey(t, "ec-p256"), 0)
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "unknown_provisioner" {
		t.Fatalf("Sign with an unknown provisioner = %v", err)
	}
}

func TestAPIErrorDecoding(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		code, msg string
		temporary bool
	}{
		{"JSON 401", 401, `{"error":"unauthorized","message":"the attestation was not accepted"}`, "unauthorized", "the attestation was not accepted", false},
		{"JSON 403", 403, `{"error":"certificate_revoked","message":"revoked"}`, "certificate_revoked", "revoked", false},
		{"JSON 503", 503, `{"error":"unavailable","message":"retry"}`, "unavailable", "retry", true},
		{"plain-text 502", 502, "upstream down\n", "http_error", "upstream down", true},
		{"empty 500", 500, "", "http_error", "", true},
		{"429", 429, `{"error":"slow_down","message":"later"}`, "slow_down", "later", true},
		{"408", 408, "timeout", "http_error", "timeout", true},
		{"JSON without a code", 400, `{"message":"x"}`, "http_error", `{"message":"x"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startClientTestCA(t)
			ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			ts.TLS = &tls.Config{Certificates: []tls.Certificate{*c.serverCert(t, []string{"127.0.0.1"})}}
			ts.StartTLS()
			defer ts.Close()
			cl, err := agent.NewClient(ts.URL, c.pool)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cl.Sign(context.Background(), "join", "t", newTestKey(t, "ec-p256"), 0)
			var ae *agent.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if ae.Status != tt.status || ae.Code != tt.code || ae.Message != tt.msg || ae.Temporary() != tt.temporary {
				t.Fatalf("APIError = %+v temporary=%v; want %d %q %q temporary=%v", ae, ae.Temporary(), tt.status, tt.code, tt.msg, tt.temporary)
			}
		})
	}
}

func TestClientRefusesCertificateForAnotherKey(t *testing.T) {
	c := startClientTestCA(t)
	other := newTestKey(t, "ec-p256")
	got, err := c.authority.Issue(context.Background(), &ca.Request{PublicKey: other.Public(), SPIFFEID: "spiffe://example.org/x", Provisioner: "join"})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(wire.SignResponse{
			Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: got.DER})),
			Chain:       got.Issuer.ChainPEM(), Serial: got.Serial, SPIFFEID: got.SPIFFEID,
			NotBefore: got.NotBefore, NotAfter: got.NotAfter,
		})
	}))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{*c.serverCert(t, []string{"127.0.0.1"})}}
	ts.StartTLS()
	defer ts.Close()
	cl, err := agent.NewClient(ts.URL, c.pool)
	if err != nil {
		t.Fatal(err)
	}
	if cr, err := cl.Sign(context.Background(), "join", "t", newTestKey(t, "ec-p256"), 0); err == nil {
		t.Fatalf("Sign accepted a certificate for another key: %s", cr.Serial)
	}
}

func TestClientRefusesUntrustedServer(t *testing.T) {
	c := startClientTestCA(t)
	other, err := ca.NewHierarchy("other", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(other.Root)
	cl, err := agent.NewClient(c.ts.URL, pool)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Sign(context.Background(), "join", c.token(t, "spiffe://example.org/x"), newTestKey(t, "ec-p256"), 0)
	var ae *agent.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("Sign to a server outside the roots = %v, want a TLS error", err)
	}
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &uae) {
		t.Errorf("err = %v, want x509.UnknownAuthorityError", err)
	}
}

func TestNewClient(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"https://127.0.0.1:8443", true},
		{"https://ca.example.org", true},
		{"https://ca.example.org/prefix/", true},
		{"http://127.0.0.1:8443", false},
		{"https://", false},
		{"", false},
		{"127.0.0.1:8443", false},
		{"://", false},
	} {
		t.Run(tt.url, func(t *testing.T) {
			_, err := agent.NewClient(tt.url, x509.NewCertPool())
			if (err == nil) != tt.ok {
				t.Fatalf("NewClient(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			}
		})
	}
}

func TestBootstrap(t *testing.T) {
	c := startClientTestCA(t)
	ctx := context.Background()
	fp := rootFingerprint(c.h.Root)
	var colons []string
	for i := 0; i < len(fp); i += 2 {
		colons = append(colons, strings.ToUpper(fp[i:i+2]))
	}
	t.Run("right fingerprint", func(t *testing.T) {
		for _, f := range []string{fp, strings.Join(colons, ":")} {
			roots, err := agent.Bootstrap(ctx, c.ts.URL, f)
			if err != nil {
				t.Fatalf("Bootstrap(%s): %v", f, err)
			}
			if len(roots) != 1 || !roots[0].Equal(c.h.Root) {
				t.Fatalf("Bootstrap = %d roots, want the CA's root", len(roots))
			}
		}
	})
	other, err := ca.NewHierarchy("other", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url, fp string
	}{
		{"wrong fingerprint", c.ts.URL, rootFingerprint(other.Root)},
		{"fingerprint of the issuing CA", c.ts.URL, rootFingerprint(c.h.Issuing)},
		{"fingerprint not hex", c.ts.URL, strings.Repeat("zz", 32)},
		{"fingerprint too short", c.ts.URL, fp[:40]},
		{"empty fingerprint", c.ts.URL, ""},
		{"plain http", strings.Replace(c.ts.URL, "https://", "http://", 1), fp},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if roots, err := agent.Bootstrap(ctx, tt.url, tt.fp); err == nil {
				t.Fatalf("Bootstrap = %d roots, want an error", len(roots))
			}
		})
	}
	t.Run("server certificate not from the pinned root", func(t *testing.T) {
		// A server that publishes the right roots but presents a
		// certificate of its own (a man in the middle replaying
		// /v1/roots).
		roots := fetchFromTestCA(t, c, "/v1/roots")
		mitm := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/pem-certificate-chain")
			_, _ = w.Write(roots)
		}))
		defer mitm.Close()
		if got, err := agent.Bootstrap(ctx, mitm.URL, fp); err == nil {
			t.Fatalf("Bootstrap through a man in the middle = %d roots, want an error", len(got))
		}
	})
	t.Run("server certificate for another host", func(t *testing.T) {
		ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.h.Root.Raw}))
		}))
		ts.TLS = &tls.Config{Certificates: []tls.Certificate{*c.serverCert(t, []string{"10.9.8.7"})}}
		ts.StartTLS()
		defer ts.Close()
		if got, err := agent.Bootstrap(ctx, ts.URL, fp); err == nil {
			t.Fatalf("Bootstrap with a certificate for 10.9.8.7 = %d roots, want an error", len(got))
		}
	})
}

// fetchFromTestCA fetches path from the test CA with a client that trusts it.
func fetchFromTestCA(t *testing.T, c *clientTestCA, path string) []byte {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(c.ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestParseCertificates(t *testing.T) {
	h, err := ca.NewHierarchy("parse", ca.ECP256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Root.Raw})
	iss := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Issuing.Raw})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		in   []byte
		want []*x509.Certificate // nil: an error
	}{
		{"one", root, []*x509.Certificate{h.Root}},
		{"two in order", cat(iss, root), []*x509.Certificate{h.Issuing, h.Root}},
		{"text around", cat([]byte("# roots\n"), root, []byte("\n")), []*x509.Certificate{h.Root}},
		{"empty", nil, nil},
		{"no PEM", []byte("hello"), nil},
		{"private key block", cat(root, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), nil},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}), nil},
		{"truncated DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Root.Raw[:len(h.Root.Raw)-10]}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := agent.ParseCertificates(tt.in)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParseCertificates = %d certificates, want an error", len(got))
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("ParseCertificates = %d, %v; want %d", len(got), err, len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Fatalf("certificate %d differs", i)
				}
			}
		})
	}
}

func TestNewKeyAndKeyTypeOf(t *testing.T) {
	for _, kt := range []string{"ec-p256", "ec-p384", "ed25519", "rsa-2048"} {
		t.Run(kt, func(t *testing.T) {
			k := newTestKey(t, kt)
			if got := agent.KeyTypeOf(k); got != kt {
				t.Fatalf("KeyTypeOf(NewKey(%s)) = %s", kt, got)
			}
			csr, err := agent.NewCSR(k)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := ca.ParseCSR([]byte(csr))
			if err != nil {
				t.Fatalf("the CA refuses the agent's CSR: %v", err)
			}
			if len(parsed.URIs) != 0 || len(parsed.DNSNames) != 0 || parsed.Subject.String() != "" {
				t.Errorf("the CSR asks for names: %v %v %q", parsed.URIs, parsed.DNSNames, parsed.Subject)
			}
		})
	}
	if _, err := agent.NewKey("rsa-1024"); err == nil {
		t.Error("NewKey(rsa-1024) succeeded")
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if got := agent.KeyTypeOf(p521); got != "ec-p256" {
		t.Errorf("KeyTypeOf(P-521) = %s, want the ec-p256 fallback", got)
	}
}
