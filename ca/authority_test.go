package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"math/big"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/store"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	oidSAN              = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSKI              = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAKI              = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidEKU              = asn1.ObjectIdentifier{2, 5, 29, 37}
)

func extension(c *x509.Certificate, oid asn1.ObjectIdentifier) (critical, ok bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical, true
		}
	}
	return false, false
}

func TestIssueLeafProfile(t *testing.T) {
	for _, issuerType := range ca.KeyTypes {
		for _, leafType := range []ca.KeyType{ca.ECP256, ca.ECP384, ca.Ed25519, ca.RSA2048} {
			t.Run(string(issuerType)+"/"+string(leafType), func(t *testing.T) {
				h := testHierarchy(t, issuerType)
				a, st, clk := testAuthority(t, func(o *ca.Options) { o.Issuer = testIssuer(t, h) })
				// A clock with a fraction of a second: certificates carry
				// whole seconds.
				clk.Set(testEpoch.Add(time.Hour + 500*time.Millisecond))
				now := testEpoch.Add(time.Hour)
				key := mustKey(t, leafType)
				const id = "spiffe://example.org/agent/profile"
				got, leaf := issue(t, a, &ca.Request{PublicKey: key.Public(), SPIFFEID: id, TTL: 10 * time.Minute,
					DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour})

				checkLeafProfile(t, leaf, h, id)
				if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
					t.Error("leaf is not for the requested key")
				}
				if want := now.Add(-time.Minute); !leaf.NotBefore.Equal(want) || !got.NotBefore.Equal(want) {
					t.Errorf("NotBefore = %s (Issued %s), want %s", leaf.NotBefore, got.NotBefore, want)
				}
				if want := now.Add(10 * time.Minute); !leaf.NotAfter.Equal(want) || !got.NotAfter.Equal(want) {
					t.Errorf("NotAfter = %s (Issued %s), want %s", leaf.NotAfter, got.NotAfter, want)
				}
				if got.SPIFFEID != id || got.Issuer == nil || got.Issuer.SKI != hex.EncodeToString(h.Issuing.SubjectKeyId) {
					t.Errorf("Issued = %+v", got)
				}
				if got.Serial != hex.EncodeToString(leaf.SerialNumber.Bytes()) {
					t.Errorf("Issued.Serial = %s, leaf serial %x", got.Serial, leaf.SerialNumber.Bytes())
				}

				// The X.509-SVID rules as go-spiffe checks them.
				td := spiffeid.RequireTrustDomainFromString(testTD)
				sid, _, err := x509svid.Verify([]*x509.Certificate{leaf, h.Issuing},
					x509bundle.FromX509Authorities(td, []*x509.Certificate{h.Root}), x509svid.WithTime(now))
				if err != nil || sid.String() != id {
					t.Errorf("x509svid.Verify = %v, %v; want %s", sid, err, id)
				}

				// Recorded byte for byte.
				rec, err := st.Certificate(context.Background(), got.Serial)
				if err != nil {
					t.Fatalf("the issuance is not recorded: %v", err)
				}
				if !bytes.Equal(rec.DER, got.DER) || rec.SPIFFEID != id || rec.Provisioner != "join" ||
					rec.IssuerSKI != got.Issuer.SKI || !rec.NotBefore.Equal(got.NotBefore) || !rec.NotAfter.Equal(got.NotAfter) {
					t.Errorf("record = %+v, does not match the issued certificate", rec)
				}
			})
		}
	}
}

// checkLeafProfile checks the X.509-SVID leaf profile of SPEC.md.
func checkLeafProfile(t *testing.T, leaf *x509.Certificate, h *ca.Hierarchy, id string) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Errorf("URI SANs = %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 0 || len(leaf.EmailAddresses) != 0 {
		t.Errorf("unexpected SANs: dns %v ip %v email %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if !bytes.Equal(leaf.RawSubject, emptySubject) {
		t.Errorf("subject = %q, want empty", leaf.Subject)
	}
	if crit, ok := extension(leaf, oidSAN); !ok || !crit {
		t.Errorf("SAN extension present=%v critical=%v, want critical with an empty subject", ok, crit)
	}
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basicConstraints valid=%v CA=%v, want CA:false", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if crit, ok := extension(leaf, oidBasicConstraints); !ok || !crit {
		t.Errorf("basicConstraints present=%v critical=%v, want critical", ok, crit)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %b, want digitalSignature only", leaf.KeyUsage)
	}
	if crit, ok := extension(leaf, oidKeyUsage); !ok || !crit {
		t.Errorf("keyUsage present=%v critical=%v, want critical", ok, crit)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth ||
		leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth || len(leaf.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage = %v %v, want serverAuth, clientAuth", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if _, ok := extension(leaf, oidEKU); !ok {
		t.Error("no extKeyUsage extension")
	}
	if _, ok := extension(leaf, oidSKI); !ok || len(leaf.SubjectKeyId) == 0 {
		t.Error("no subject key identifier")
	}
	if _, ok := extension(leaf, oidAKI); !ok || !bytes.Equal(leaf.AuthorityKeyId, h.Issuing.SubjectKeyId) {
		t.Errorf("AKI = %x, want the issuer's SKI %x", leaf.AuthorityKeyId, h.Issuing.SubjectKeyId)
	}
	if !bytes.Equal(leaf.RawIssuer, h.Issuing.RawSubject) {
		t.Error("leaf issuer name is not the issuing CA's subject")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %x is not positive with at least 64 bits", leaf.SerialNumber)
	}
	if err := leaf.CheckSignatureFrom(h.Issuing); err != nil {
		t.Errorf("leaf signature: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(h.Root)
	inter := x509.NewCertPool()
	inter.AddCert(h.Issuing)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: leaf.NotBefore.Add(time.Minute),
			KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("leaf does not verify for EKU %v: %v", eku, err)
		}
	}
}

func TestIssueSerialsUnique(t *testing.T) {
	a, st, _ := testAuthority(t, nil)
	key := mustKey(t, ca.ECP256).Public()
	const n, workers = 1000, 16
	serials := make(chan *big.Int, n)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				got, err := a.Issue(context.Background(), &ca.Request{PublicKey: key, SPIFFEID: "spiffe://example.org/agent/serials", Provisioner: "join"})
				if err != nil {
					errs <- err
					return
				}
				c, err := x509.ParseCertificate(got.DER)
				if err != nil {
					errs <- err
					return
				}
				serials <- c.SerialNumber
			}
		}()
	}
	wg.Wait()
	close(serials)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := make(map[string]bool, n)
	for s := range serials {
		if s.Sign() <= 0 || s.BitLen() < 64 {
			t.Fatalf("serial %x: want positive with at least 64 bits", s)
		}
		// RFC 5280 §4.1.2.2: at most 20 octets.
		if der, _ := asn1.Marshal(s); len(der) > 22 {
			t.Fatalf("serial %x is longer than 20 octets", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %x issued twice", s)
		}
		seen[s.String()] = true
	}
	if len(seen) != n {
		t.Fatalf("%d serials, want %d", len(seen), n)
	}
	if got := countCerts(t, st); got != n {
		t.Fatalf("store holds %d certificates, want %d", got, n)
	}
}

func TestIssueLifetime(t *testing.T) {
	tests := []struct {
		name                string
		minTTL              time.Duration
		ttl, def, max       time.Duration
		want                time.Duration // lifetime from now; 0 with wantErr
		wantErr             bool
		clockBeforeIssuerNA time.Duration // >0: clock set this long before the issuer's NotAfter
	}{
		{name: "built-in default", want: 5 * time.Minute},
		{name: "provisioner default", def: 15 * time.Minute, max: time.Hour, want: 15 * time.Minute},
		{name: "default capped at max", def: 2 * time.Hour, max: 30 * time.Minute, want: 30 * time.Minute},
		{name: "explicit", ttl: 42 * time.Minute, def: 5 * time.Minute, max: time.Hour, want: 42 * time.Minute},
		{name: "explicit equals max", ttl: time.Hour, max: time.Hour, want: time.Hour},
		{name: "explicit equals min", ttl: time.Minute, max: time.Hour, want: time.Minute},
		{name: "above max", ttl: time.Hour + time.Second, max: time.Hour, wantErr: true},
		{name: "above built-in max", ttl: 2 * time.Hour, wantErr: true},
		{name: "below min", ttl: 59 * time.Second, max: time.Hour, wantErr: true},
		{name: "negative", ttl: -5 * time.Minute, max: time.Hour, wantErr: true},
		{name: "lower MinTTL", minTTL: 5 * time.Second, ttl: 10 * time.Second, max: time.Hour, want: 10 * time.Second},
		{name: "below lower MinTTL", minTTL: 5 * time.Second, ttl: 4 * time.Second, max: time.Hour, wantErr: true},
		{name: "max above 24h is capped: 24h ok", ttl: 24 * time.Hour, max: 48 * time.Hour, want: 24 * time.Hour},
		{name: "max above 24h is capped: 25h refused", ttl: 25 * time.Hour, max: 48 * time.Hour, wantErr: true},
		{name: "max below min", max: 30 * time.Second, wantErr: true},
		{name: "clamped to issuer NotAfter", ttl: time.Hour, max: time.Hour, clockBeforeIssuerNA: 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, st, clk := testAuthority(t, func(o *ca.Options) { o.MinTTL = tt.minTTL })
			iss := a.Issuer().Cert
			if tt.clockBeforeIssuerNA > 0 {
				clk.Set(iss.NotAfter.Add(-tt.clockBeforeIssuerNA))
			}
			now := clk.Now()
			got, err := a.Issue(context.Background(), &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
				SPIFFEID: "spiffe://example.org/agent/ttl", Provisioner: "join", TTL: tt.ttl, DefaultTTL: tt.def, MaxTTL: tt.max})
			if tt.wantErr {
				if got != nil || !errors.Is(err, ca.ErrTTL) {
					t.Fatalf("Issue = %v, %v; want ErrTTL", got != nil, err)
				}
				if n := countCerts(t, st); n != 0 {
					t.Fatalf("a refused issuance left %d records", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(got.DER)
			if err != nil {
				t.Fatal(err)
			}
			want := now.Add(tt.want)
			if tt.clockBeforeIssuerNA > 0 {
				want = iss.NotAfter
			}
			if !leaf.NotAfter.Equal(want) || !got.NotAfter.Equal(want) {
				t.Fatalf("NotAfter = %s, want %s", leaf.NotAfter, want)
			}
			if !leaf.NotBefore.Equal(now.Add(-time.Minute)) {
				t.Fatalf("NotBefore = %s, want %s", leaf.NotBefore, now.Add(-time.Minute))
			}
		})
	}
}

func TestIssueWithExpiredIssuer(t *testing.T) {
	// Once the issuing CA has expired, nothing it signs can verify: Issue
	// must refuse rather than record and return a certificate whose
	// NotAfter precedes its NotBefore.
	a, st, clk := testAuthority(t, nil)
	clk.Set(a.Issuer().Cert.NotAfter.Add(time.Hour))
	got, err := a.Issue(context.Background(), &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
		SPIFFEID: "spiffe://example.org/agent/late", Provisioner: "join"})
	if err == nil {
		t.Errorf("Issue with an expired issuer succeeded: NotBefore %s, NotAfter %s", got.NotBefore, got.NotAfter)
	}
	if n := countCerts(t, st); n != 0 {
		t.Errorf("store holds %d certificates from an expired issuer, want 0", n)
	}
}

func TestIssueBackdate(t *testing.T) {
	tests := []struct {
		name     string
		backdate time.Duration
		want     time.Duration
	}{
		{"default", 0, time.Minute},
		{"shorter", 30 * time.Second, 30 * time.Second},
		{"disabled", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, clk := testAuthority(t, func(o *ca.Options) { o.Backdate = tt.backdate })
			got, _ := issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/agent/backdate"})
			if want := clk.Now().Add(-tt.want); !got.NotBefore.Equal(want) {
				t.Fatalf("NotBefore = %s, want %s", got.NotBefore, want)
			}
		})
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	h := testHierarchy(t, ca.ECP256)
	st, _ := openTestStore(t)
	iss := testIssuer(t, h)
	tests := []struct {
		name string
		opts ca.Options
	}{
		{"no trust domain", ca.Options{Issuer: iss, Recorder: st}},
		{"bad trust domain", ca.Options{TrustDomain: "spiffe://example.org", Issuer: iss, Recorder: st}},
		{"no recorder", ca.Options{TrustDomain: testTD, Issuer: iss}},
		{"backdate above a minute", ca.Options{TrustDomain: testTD, Issuer: iss, Recorder: st, Backdate: 2 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a, err := ca.New(tt.opts); err == nil {
				t.Fatalf("New = %v, want an error", a)
			}
		})
	}
	// Without an issuer the Authority refuses to issue until it gets one.
	none, err := ca.New(ca.Options{TrustDomain: testTD, Recorder: st})
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, ca.ECP256)
	if _, err := none.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/x"}); !errors.Is(err, ca.ErrNoIssuer) {
		t.Fatalf("Issue without an issuer: %v, want ErrNoIssuer", err)
	}
	none.SetIssuer(iss)
	if _, err := none.Issue(context.Background(), &ca.Request{PublicKey: key.Public(), SPIFFEID: "spiffe://example.org/x"}); err != nil {
		t.Fatalf("Issue after SetIssuer: %v", err)
	}
	a, err := ca.New(ca.Options{TrustDomain: testTD, Issuer: iss, Recorder: st})
	if err != nil {
		t.Fatalf("New with the required options: %v", err)
	}
	if a.TrustDomain() != testTD || a.Issuer() != iss {
		t.Fatalf("TrustDomain/Issuer = %q/%v", a.TrustDomain(), a.Issuer())
	}
}

func TestIssueRefusesIdentity(t *testing.T) {
	tests := []struct {
		name string
		req  ca.Request
	}{
		{"other trust domain", ca.Request{SPIFFEID: "spiffe://other.org/agent"}},
		{"sub-domain of the trust domain", ca.Request{SPIFFEID: "spiffe://x.example.org/agent"}},
		{"no path", ca.Request{SPIFFEID: "spiffe://example.org"}},
		{"root path", ca.Request{SPIFFEID: "spiffe://example.org/"}},
		{"empty", ca.Request{SPIFFEID: ""}},
		{"https scheme", ca.Request{SPIFFEID: "https://example.org/agent"}},
		{"upper-case trust domain", ca.Request{SPIFFEID: "spiffe://EXAMPLE.org/agent"}},
		{"empty segment", ca.Request{SPIFFEID: "spiffe://example.org/a//b"}},
		{"dot segment", ca.Request{SPIFFEID: "spiffe://example.org/a/../b"}},
		{"query", ca.Request{SPIFFEID: "spiffe://example.org/a?b=c"}},
		{"fragment", ca.Request{SPIFFEID: "spiffe://example.org/a#b"}},
		{"port", ca.Request{SPIFFEID: "spiffe://example.org:443/a"}},
		{"userinfo", ca.Request{SPIFFEID: "spiffe://u@example.org/a"}},
		{"percent-encoded", ca.Request{SPIFFEID: "spiffe://example.org/a%20b"}},
		{"bad DNS name", ca.Request{SPIFFEID: "spiffe://example.org/a", DNSNames: []string{"bad_name!"}}},
		{"empty DNS name", ca.Request{SPIFFEID: "spiffe://example.org/a", DNSNames: []string{""}}},
		{"bad IP", ca.Request{SPIFFEID: "spiffe://example.org/a", IPAddresses: []string{"300.1.1.1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, st, _ := testAuthority(t, nil)
			req := tt.req
			req.PublicKey = mustKey(t, ca.ECP256).Public()
			req.Provisioner = "join"
			got, err := a.Issue(context.Background(), &req)
			if got != nil || !errors.Is(err, ca.ErrIdentity) {
				t.Fatalf("Issue(%q) = %v, %v; want ErrIdentity", tt.req.SPIFFEID, got != nil, err)
			}
			if n := countCerts(t, st); n != 0 {
				t.Fatalf("a refused issuance left %d records", n)
			}
		})
	}
}

func TestIssueDNSAndIPSANs(t *testing.T) {
	a, _, _ := testAuthority(t, nil)
	_, leaf := issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/agentca/server", CAIdentity: true,
		DNSNames: []string{"localhost", "ca.example.org"}, IPAddresses: []string{"127.0.0.1", "::1"}})
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) != 2 || len(leaf.IPAddresses) != 2 {
		t.Fatalf("SANs: uri %v dns %v ip %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1): %v", err)
	}
	if err := leaf.VerifyHostname("ca.example.org"); err != nil {
		t.Errorf("VerifyHostname(ca.example.org): %v", err)
	}
}

func TestIssueRefusesKey(t *testing.T) {
	tests := []struct {
		name string
		pub  crypto.PublicKey
	}{
		{"RSA-1024", loadTestKey(t, "rsa-1024.key.pem").Public()},
		{"nil", nil},
		{"private key", mustKey(t, ca.ECP256)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, st, _ := testAuthority(t, nil)
			got, err := a.Issue(context.Background(), &ca.Request{PublicKey: tt.pub, SPIFFEID: "spiffe://example.org/a", Provisioner: "join"})
			if got != nil || !errors.Is(err, ca.ErrKeyType) {
				t.Fatalf("Issue = %v, %v; want ErrKeyType", got != nil, err)
			}
			if n := countCerts(t, st); n != 0 {
				t.Fatalf("a refused issuance left %d records", n)
			}
		})
	}
}

func TestIssueRecordsAndConsumes(t *testing.T) {
	ctx := context.Background()
	a, st, clk := testAuthority(t, nil)
	const id = "spiffe://example.org/agent/token"
	hash := bytes.Repeat([]byte{7}, 32)
	if err := st.CreateJoinTokens(ctx, []store.JoinToken{{Hash: hash, SPIFFEID: id, Provisioner: "join",
		CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(15 * time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	// A renewal's parent must be recorded (the store checks it in the
	// issuing transaction).
	parent, _ := issue(t, a, &ca.Request{SPIFFEID: id})
	firstKey := mustKey(t, ca.ECP256)
	first, _ := issue(t, a, &ca.Request{SPIFFEID: id, JoinToken: hash, Once: []string{"jti-1"}, RenewedFrom: parent.Serial, PublicKey: firstKey.Public()})

	rec, err := st.Certificate(ctx, first.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if rec.RenewedFrom != parent.Serial {
		t.Errorf("RenewedFrom = %q, want %s", rec.RenewedFrom, parent.Serial)
	}
	tok, err := st.JoinToken(ctx, hash)
	if err != nil {
		t.Fatal(err)
	}
	if tok.UsedBy != first.Serial {
		t.Errorf("token UsedBy = %q, want %q", tok.UsedBy, first.Serial)
	}

	tests := []struct {
		name string
		req  ca.Request
		want error
	}{
		{"join token already used", ca.Request{SPIFFEID: id, JoinToken: hash}, store.ErrTokenInvalid},
		{"unknown join token", ca.Request{SPIFFEID: id, JoinToken: bytes.Repeat([]byte{8}, 32)}, store.ErrTokenInvalid},
		{"replay key reused", ca.Request{SPIFFEID: id, Once: []string{"jti-1"}}, store.ErrReplay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.PublicKey = mustKey(t, ca.ECP256).Public()
			req.Provisioner = "join"
			got, err := a.Issue(ctx, &req)
			if got != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Issue = %v, %v; want no certificate and %v", got != nil, err, tt.want)
			}
			if n := countCerts(t, st); n != 2 {
				t.Fatalf("store holds %d certificates after a refusal, want 2 (the parent and the first)", n)
			}
		})
	}
	// The same request for the same key is a retry: the certificate
	// already issued (Existing), nothing new recorded.
	t.Run("retry with the same key", func(t *testing.T) {
		req := ca.Request{SPIFFEID: id, JoinToken: hash, Once: []string{"jti-1"}, RenewedFrom: parent.Serial, PublicKey: firstKey.Public(), Provisioner: "join"}
		got, err := a.Issue(ctx, &req)
		if err != nil || !got.Existing || got.Serial != first.Serial || got.LogIndex != first.LogIndex || !bytes.Equal(got.DER, first.DER) {
			t.Fatalf("retry = %+v, %v; want the first certificate, Existing", got, err)
		}
		if n := countCerts(t, st); n != 2 {
			t.Fatalf("store holds %d certificates after a retry, want 2", n)
		}
	})
}

func TestIssueTokenOfExpiredOrOtherIdentity(t *testing.T) {
	ctx := context.Background()
	a, st, clk := testAuthority(t, nil)
	hash := bytes.Repeat([]byte{9}, 32)
	if err := st.CreateJoinTokens(ctx, []store.JoinToken{{Hash: hash, SPIFFEID: "spiffe://example.org/a", Provisioner: "join",
		CreatedAt: clk.Now(), ExpiresAt: clk.Now().Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, id, prov string
		advance        time.Duration
	}{
		{"other SPIFFE ID", "spiffe://example.org/b", "join", 0},
		{"other provisioner", "spiffe://example.org/a", "other", 0},
		{"expired", "spiffe://example.org/a", "join", time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk.Advance(tt.advance)
			got, err := a.Issue(ctx, &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(), SPIFFEID: tt.id,
				Provisioner: tt.prov, JoinToken: hash})
			if got != nil || !errors.Is(err, store.ErrTokenInvalid) {
				t.Fatalf("Issue = %v, %v; want ErrTokenInvalid", got != nil, err)
			}
		})
	}
	if n := countCerts(t, st); n != 0 {
		t.Fatalf("store holds %d certificates, want 0", n)
	}
}

func TestIssueDuplicateSerialRefusedByStore(t *testing.T) {
	// A broken randomness source that repeats itself must not yield two
	// certificates with one serial: the store refuses the second.
	a, st, _ := testAuthority(t, func(o *ca.Options) { o.Rand = repeatReader(0x42) })
	issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/a"})
	got, err := a.Issue(context.Background(), &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
		SPIFFEID: "spiffe://example.org/a", Provisioner: "join"})
	if got != nil || !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("Issue = %v, %v; want ErrDuplicateSerial", got != nil, err)
	}
	if n := countCerts(t, st); n != 1 {
		t.Fatalf("store holds %d certificates, want 1", n)
	}
}

func TestIssueRandFailure(t *testing.T) {
	boom := errors.New("entropy exhausted")
	a, st, _ := testAuthority(t, func(o *ca.Options) { o.Rand = iotest.ErrReader(boom) })
	got, err := a.Issue(context.Background(), &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
		SPIFFEID: "spiffe://example.org/a", Provisioner: "join"})
	if got != nil || !errors.Is(err, boom) {
		t.Fatalf("Issue = %v, %v; want the Rand error", got != nil, err)
	}
	if n := countCerts(t, st); n != 0 {
		t.Fatalf("store holds %d certificates, want 0", n)
	}
}

func TestIssueStoreClosed(t *testing.T) {
	a, st, _ := testAuthority(t, nil)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := a.Issue(context.Background(), &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
		SPIFFEID: "spiffe://example.org/a", Provisioner: "join"})
	if got != nil || !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Issue = %v, %v; want store.ErrClosed and no certificate", got != nil, err)
	}
}

func TestIssueCanceledContext(t *testing.T) {
	a, st, _ := testAuthority(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := a.Issue(ctx, &ca.Request{PublicKey: mustKey(t, ca.ECP256).Public(),
		SPIFFEID: "spiffe://example.org/a", Provisioner: "join"})
	if got != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Issue = %v, %v; want context.Canceled and no certificate", got != nil, err)
	}
	if n := countCerts(t, st); n != 0 {
		t.Fatalf("store holds %d certificates, want 0", n)
	}
}

// repeatReader yields the same byte forever.
type repeatReader byte

func (r repeatReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r)
	}
	return len(b), nil
}

func TestIssueRevocationURLs(t *testing.T) {
	tests := []struct {
		name, base, want string
	}{
		{"no public URL", "", ""},
		{"public URL", "http://ca.example.org:8080", "http://ca.example.org:8080"},
		{"trailing slash", "http://ca.example.org:8080/", "http://ca.example.org:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, _ := testAuthority(t, func(o *ca.Options) { o.PublicHTTP = tt.base })
			_, leaf := issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/agent/aia"})
			if tt.want == "" {
				if len(leaf.OCSPServer)+len(leaf.IssuingCertificateURL)+len(leaf.CRLDistributionPoints) != 0 {
					t.Fatalf("URLs without PublicHTTP: %v %v %v", leaf.OCSPServer, leaf.IssuingCertificateURL, leaf.CRLDistributionPoints)
				}
				return
			}
			ski := a.Issuer().SKI
			if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != tt.want+"/ocsp" {
				t.Errorf("OCSP = %v, want %s/ocsp", leaf.OCSPServer, tt.want)
			}
			if len(leaf.IssuingCertificateURL) != 1 || leaf.IssuingCertificateURL[0] != tt.want+"/ca/"+ski+".crt" {
				t.Errorf("caIssuers = %v", leaf.IssuingCertificateURL)
			}
			if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != tt.want+"/crl/"+ski {
				t.Errorf("CRL DP = %v", leaf.CRLDistributionPoints)
			}
			// The X.509-SVID profile still holds with the URLs added.
			checkLeafProfile(t, leaf, testHierarchy(t, ca.ECP256), "spiffe://example.org/agent/aia")
		})
	}
}

func TestIssueResponder(t *testing.T) {
	a, st, clk := testAuthority(t, nil)
	key := mustKey(t, ca.ECP256)
	got, err := a.IssueResponder(context.Background(), key.Public(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(got.DER)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageOCSPSigning || c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("responder profile: EKU %v CA %v KU %b", c.ExtKeyUsage, c.IsCA, c.KeyUsage)
	}
	if _, ok := extension(c, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}); !ok {
		t.Error("no id-pkix-ocsp-nocheck extension")
	}
	if len(c.URIs)+len(c.DNSNames) != 0 {
		t.Errorf("responder has SANs: %v %v", c.URIs, c.DNSNames)
	}
	if err := c.CheckSignatureFrom(a.Issuer().Cert); err != nil {
		t.Error(err)
	}
	if want := clk.Now().Add(24 * time.Hour); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s", c.NotAfter, want)
	}
	rec, err := st.Certificate(context.Background(), got.Serial)
	if err != nil || rec.Provisioner != ca.ResponderProvisioner {
		t.Fatalf("responder record = %+v, %v", rec, err)
	}
}

// scriptedSerials hands out the serial bytes of a script, one 16-byte
// serial per read, then reads from crypto/rand (for signatures).
type scriptedSerials struct {
	mu     sync.Mutex
	serial [][]byte
}

func (s *scriptedSerials) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(p) == ca.SerialBytes && len(s.serial) > 0 {
		n := copy(p, s.serial[0])
		s.serial = s.serial[1:]
		return n, nil
	}
	return rand.Read(p)
}

func TestIssueRetriesSerialCollision(t *testing.T) {
	first := bytes.Repeat([]byte{0x42}, ca.SerialBytes)
	second := bytes.Repeat([]byte{0x43}, ca.SerialBytes)
	src := &scriptedSerials{serial: [][]byte{first, first, second}}
	a, st, _ := testAuthority(t, func(o *ca.Options) { o.Rand = src })
	issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/a"})
	got, leaf := issue(t, a, &ca.Request{SPIFFEID: "spiffe://example.org/b"})
	if got.Serial != hex.EncodeToString(second) || leaf.SerialNumber.Cmp(new(big.Int).SetBytes(second)) != 0 {
		t.Fatalf("after a collision the serial is %s, want %x", got.Serial, second)
	}
	if n := countCerts(t, st); n != 2 {
		t.Fatalf("store holds %d certificates, want 2", n)
	}
}
