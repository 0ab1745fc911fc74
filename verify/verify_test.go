package verify_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/config"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/verify"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

func quickOCSP(c *config.Config) {
	c.OCSP.Validity = config.Duration(time.Second)
}

func enroll(t *testing.T, ca *testca.CA, id string) *agent.Source {
	t.Helper()
	tok := ca.Token(t, id)
	src, err := agent.NewSource(context.Background(), agent.Config{CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// server runs an mTLS server whose client checks are a Verifier's.
func server(t *testing.T, v *verify.Verifier, svid *agent.Source) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: v.ServerTLSConfig(svid), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func call(url string, client *agent.Source, serverID spiffeid.ID) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: client.ClientTLSConfig(tlsconfig.AuthorizeID(serverID)), DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}

func revoke(t *testing.T, ca *testca.CA, src *agent.Source) {
	t.Helper()
	var out map[string]any
	client, err := agent.NewClient(ca.URL, ca.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Revoke(context.Background(), src.Current().TLSCertificate(), "", "keyCompromise", &out); err != nil {
		t.Fatalf("revoke: %v", err)
	}
}

func TestRevokedClientRefusedWithinOneSecond(t *testing.T) {
	ca := testca.Start(t, testca.Options{Configure: quickOCSP})
	serverSrc := enroll(t, ca, "spiffe://example.org/svc/server")
	clientSrc := enroll(t, ca, "spiffe://example.org/svc/client")
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots, MaxCacheAge: 500 * time.Millisecond,
		Authorize: tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/svc/client"))})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	url := server(t, v, serverSrc)
	serverID := spiffeid.RequireFromString("spiffe://example.org/svc/server")
	if err := call(url, clientSrc, serverID); err != nil {
		t.Fatalf("a good client was refused: %v", err)
	}
	revoke(t, ca, clientSrc)
	revokedAt := time.Now()
	for {
		err := call(url, clientSrc, serverID)
		if err != nil {
			t.Logf("refused %v after revocation: %v", time.Since(revokedAt), err)
			break
		}
		if time.Since(revokedAt) > time.Second {
			t.Fatalf("revoked client still accepted %v after revocation", time.Since(revokedAt))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The other way: the revoked certificate as a server's is refused by
	// a client that verifies with the library.
	if _, err := v.VerifyPeer(context.Background(), rawChain(clientSrc), nil); !errors.Is(err, verify.ErrRevoked) {
		t.Fatalf("VerifyPeer of the revoked certificate: err = %v, want ErrRevoked", err)
	}
}

func rawChain(src *agent.Source) [][]byte {
	return src.Current().TLSCertificate().Certificate
}

func TestWrongSPIFFEIDRefused(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	serverSrc := enroll(t, ca, "spiffe://example.org/svc/server")
	other := enroll(t, ca, "spiffe://example.org/svc/intruder")
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots,
		Authorize: tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/svc/client"))})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	url := server(t, v, serverSrc)
	if err := call(url, other, spiffeid.RequireFromString("spiffe://example.org/svc/server")); err == nil {
		t.Fatal("a client with an unauthorised SPIFFE ID was accepted")
	}
	// Path-prefix authorisation accepts it.
	v2, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots,
		Authorize: tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
			if len(id.Path()) > 5 && id.Path()[:5] == "/svc/" {
				return nil
			}
			return errors.New("not a service")
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if _, err := v2.VerifyPeer(context.Background(), rawChain(other), nil); err != nil {
		t.Fatalf("prefix authoriser refused /svc/intruder: %v", err)
	}
}

// With the CA (OCSP and CRL) unreachable, fail-closed refuses and
// soft-fail accepts.
func TestResponderDown(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	client := enroll(t, ca, "spiffe://example.org/svc/client")
	ca.Stop()
	for _, tc := range []struct {
		name     string
		softFail bool
		wantErr  error
	}{
		{"fail closed", false, verify.ErrStatusUnknown},
		{"soft fail", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots, SoftFail: tc.softFail})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			_, err = v.VerifyPeer(context.Background(), rawChain(client), nil)
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// A server's stapled response is used by a verifying client, so it needs
// no OCSP fetch of its own.
func TestStapledResponse(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	serverSrc := enroll(t, ca, "spiffe://example.org/svc/server")
	deadline := time.Now().Add(10 * time.Second)
	for serverSrc.OCSPStaple() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the agent never stapled an OCSP response")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ca.Stop() // from now on only the staple can vouch for the server
	v, err := verify.New(verify.Options{TrustDomain: "example.org", Roots: ca.Roots})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverSrc.ServerTLSConfig(tlsconfig.AuthorizeAny()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	clientSrc := serverSrc // any SVID will do for the client side here
	conn, err := tls.Dial("tcp", ln.Addr().String(), v.ClientTLSConfig(clientSrc))
	if err != nil {
		t.Fatalf("handshake with a stapled server while the CA is down: %v", err)
	}
	if len(conn.ConnectionState().OCSPResponse) == 0 {
		t.Fatal("no stapled response received")
	}
	conn.Close()
}
