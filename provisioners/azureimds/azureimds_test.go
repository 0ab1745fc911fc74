package azureimds_test

import (
	"context"
	"encoding/base64"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/azureimds"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// now is the tests' starting time: real time, since the signer's
// signing-time attribute is real time too.
func now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// attestedFor runs the agent's side: a challenge, then attested data from
// "IMDS" (the test chain) for that nonce.
func attestedFor(t testing.TB, p *azureimds.Provisioner, c *chain, clk *clock) string {
	t.Helper()
	nonce, _, err := p.Challenge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	doc := azureDoc(nonce, testSubscription, testVM, clk.Now(), clk.Now().Add(6*time.Hour))
	return attestedToken(nonce, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256))
}

func TestAttestAccepts(t *testing.T) {
	c := testChain(t)
	wantClaims := map[string]string{"vm_id": testVM, "subscription_id": testSubscription, "sku": "22_04-lts-gen2"}
	for _, tt := range []struct {
		name, options string
		withChain     bool
	}{
		{"intermediate configured", testOptions, false},
		// The intermediate only in the message: it helps build the chain
		// and is trusted no more than the configured ones.
		{"intermediate in the message", `{"subscriptions": ["` + strings.ToUpper(testSubscription) + `"], "roots_file": "` + rootFile +
			`", "intermediates_file": "certs/intermediates.pem"}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(now())
			p := newProvisioner(t, "azure", tt.options, clk, 0)
			nonce, exp, err := p.Challenge(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^[0-9]{10}$`).MatchString(nonce) {
				t.Errorf("nonce %q is not 10 digits", nonce)
			}
			if want := clk.Now().Add(azureimds.DefaultNonceTTL); !exp.Equal(want) {
				t.Errorf("expiresAt = %s, want %s", exp, want)
			}
			clk.Advance(2 * time.Second)
			doc := azureDoc(nonce, testSubscription, strings.ToUpper(testVM), clk.Now(), clk.Now().Add(6*time.Hour))
			clk.Advance(time.Second)
			id, err := p.Attest(context.Background(), attestedToken(nonce, sign(doc, c, tt.withChain, pkcs7.OIDDigestAlgorithmSHA256)))
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if id.SPIFFEID != "" || id.JoinToken != nil || id.DNSNames != nil {
				t.Errorf("Identity = %+v, want only Once and Claims", id)
			}
			if want := "azure-imds:azure:" + testVM; len(id.Once) != 1 || id.Once[0] != want {
				t.Errorf("Once = %q, want [%q]", id.Once, want)
			}
			if !maps.Equal(id.Claims, wantClaims) {
				t.Errorf("Claims = %v, want %v", id.Claims, wantClaims)
			}
		})
	}
}

func TestAttestRefuses(t *testing.T) {
	c := testChain(t)
	// Another hierarchy, with its own root: a perfect imitation of
	// Azure's, which the provisioner was not told to trust.
	other := newChain("Microsoft TLS RSA Root G2", "metadata.azure.com")
	// A certificate from the trusted hierarchy for another name, such as
	// any customer of a public CA can obtain.
	wrongName := *c
	wrongName.signerKey = mustKey()
	wrongName.signer = newSigner(c.inter, c.interKey, wrongName.signerKey, "vm.example.com")

	type setup struct {
		p     *azureimds.Provisioner
		clk   *clock
		nonce string
	}
	fresh := func(s setup) []byte {
		return azureDoc(s.nonce, testSubscription, testVM, s.clk.Now(), s.clk.Now().Add(6*time.Hour))
	}
	signed := func(s setup, doc []byte) string {
		return attestedToken(s.nonce, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256))
	}

	tests := []struct {
		name    string
		options string
		token   func(t *testing.T, s setup) string
		detail  string
	}{
		{"bad signature", testOptions, func(t *testing.T, s setup) string {
			der, _ := base64.StdEncoding.DecodeString(sign(fresh(s), c, false, pkcs7.OIDDigestAlgorithmSHA256))
			der[len(der)-10] ^= 0x01
			return attestedToken(s.nonce, base64.StdEncoding.EncodeToString(der))
		}, "bad signature"},
		{"chain not to the configured roots", testOptions, func(t *testing.T, s setup) string {
			return attestedToken(s.nonce, sign(fresh(s), other, true, pkcs7.OIDDigestAlgorithmSHA256))
		}, "does not chain to the configured roots"},
		{"chain to the shipped roots only", `{"subscriptions": ["` + testSubscription + `"]}`, func(t *testing.T, s setup) string {
			return attestedToken(s.nonce, sign(fresh(s), c, true, pkcs7.OIDDigestAlgorithmSHA256))
		}, "does not chain to the configured roots"},
		{"signer not metadata.azure.com", testOptions, func(t *testing.T, s setup) string {
			return attestedToken(s.nonce, sign(fresh(s), &wrongName, false, pkcs7.OIDDigestAlgorithmSHA256))
		}, `signer "vm.example.com" is not issued for metadata.azure.com`},
		{"nonce from another challenge", testOptions, func(t *testing.T, s setup) string {
			// Two outstanding nonces: the token names one, the document
			// the other.
			second, _, err := s.p.Challenge(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			doc := azureDoc(second, testSubscription, testVM, s.clk.Now(), s.clk.Now().Add(time.Hour))
			return attestedToken(s.nonce, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256))
		}, "nonce"},
		{"nonce from another provisioner", testOptions, func(t *testing.T, s setup) string {
			q := newProvisioner(t, "azure-2", testOptions, s.clk, 0)
			n, _, err := q.Challenge(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			doc := azureDoc(n, testSubscription, testVM, s.clk.Now(), s.clk.Now().Add(time.Hour))
			return attestedToken(n, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256))
		}, "not issued by this provisioner"},
		{"nonce never issued", testOptions, func(t *testing.T, s setup) string {
			n := "0000000000"
			if n == s.nonce {
				n = "0000000001"
			}
			doc := azureDoc(n, testSubscription, testVM, s.clk.Now(), s.clk.Now().Add(time.Hour))
			return attestedToken(n, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256))
		}, "not issued by this provisioner"},
		{"expired nonce", testOptions, func(t *testing.T, s setup) string {
			tok := signed(s, fresh(s))
			s.clk.Advance(azureimds.DefaultNonceTTL)
			return tok
		}, "nonce expired"},
		{"expired nonce, nonce_ttl", `{"subscriptions": ["` + testSubscription + `"], "roots_file": "` + rootFile +
			`", "intermediates_file": "` + interFile + `", "nonce_ttl": "30s"}`, func(t *testing.T, s setup) string {
			tok := signed(s, fresh(s))
			s.clk.Advance(31 * time.Second)
			return tok
		}, "nonce expired"},
		{"subscription outside the allow-list", testOptions, func(t *testing.T, s setup) string {
			doc := azureDoc(s.nonce, "11111111-2222-3333-4444-555555555555", testVM, s.clk.Now(), s.clk.Now().Add(time.Hour))
			return signed(s, doc)
		}, `subscription "11111111-2222-3333-4444-555555555555" not allowed`},
		{"expired attested timeStamp", testOptions, func(t *testing.T, s setup) string {
			doc := azureDoc(s.nonce, testSubscription, testVM, s.clk.Now(), s.clk.Now().Add(5*time.Second))
			s.clk.Advance(2 * time.Minute)
			return signed(s, doc)
		}, "attested document expired"},
		{"document created before the nonce was issued", testOptions, func(t *testing.T, s setup) string {
			doc := azureDoc(s.nonce, testSubscription, testVM, s.clk.Now().Add(-10*time.Minute), s.clk.Now().Add(time.Hour))
			return signed(s, doc)
		}, "before its nonce was issued"},
		{"document created in the future", testOptions, func(t *testing.T, s setup) string {
			doc := azureDoc(s.nonce, testSubscription, testVM, s.clk.Now().Add(10*time.Minute), s.clk.Now().Add(time.Hour))
			return signed(s, doc)
		}, "in the future"},
		{"no vmId", testOptions, func(t *testing.T, s setup) string {
			return signed(s, azureDoc(s.nonce, testSubscription, "", s.clk.Now(), s.clk.Now().Add(time.Hour)))
		}, "vmId"},
		{"vmId not a GUID", testOptions, func(t *testing.T, s setup) string {
			return signed(s, azureDoc(s.nonce, testSubscription, "../../etc", s.clk.Now(), s.clk.Now().Add(time.Hour)))
		}, "vmId"},
		{"timeStamp not a time", testOptions, func(t *testing.T, s setup) string {
			doc := strings.Replace(string(fresh(s)), `"createdOn":"`, `"createdOn":"yesterday `, 1)
			return signed(s, []byte(doc))
		}, "createdOn"},
		{"content not JSON", testOptions, func(t *testing.T, s setup) string {
			return signed(s, []byte("nonce="+s.nonce))
		}, "malformed attested document"},
		{"SHA-1 digest", testOptions, func(t *testing.T, s setup) string {
			return attestedToken(s.nonce, sign(fresh(s), c, false, pkcs7.OIDDigestAlgorithmSHA1))
		}, "digest algorithm"},
		{"two signers", testOptions, func(t *testing.T, s setup) string {
			sd, _ := pkcs7.NewSignedData(fresh(s))
			sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
			_ = sd.AddSigner(c.signer, c.signerKey, pkcs7.SignerInfoConfig{})
			_ = sd.AddSigner(c.signer, c.signerKey, pkcs7.SignerInfoConfig{})
			der, _ := sd.Finish()
			return attestedToken(s.nonce, base64.StdEncoding.EncodeToString(der))
		}, "2 signers"},
		{"detached signature", testOptions, func(t *testing.T, s setup) string {
			sd, _ := pkcs7.NewSignedData(fresh(s))
			sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
			_ = sd.AddSigner(c.signer, c.signerKey, pkcs7.SignerInfoConfig{})
			sd.Detach()
			der, _ := sd.Finish()
			return attestedToken(s.nonce, base64.StdEncoding.EncodeToString(der))
		}, "bad signature"},
		{"signature not base64", testOptions, func(t *testing.T, s setup) string { return attestedToken(s.nonce, "%%%") }, "not base64"},
		{"signature not PKCS#7", testOptions, func(t *testing.T, s setup) string { return attestedToken(s.nonce, "MAA=") }, "malformed PKCS#7"},
		{"no signature", testOptions, func(t *testing.T, s setup) string { return `{"nonce":"` + s.nonce + `"}` }, "no signature"},
		{"nonce not 10 digits", testOptions, func(t *testing.T, s setup) string { return `{"nonce":"abc","signature":"AA=="}` }, "not 10 digits"},
		{"unknown token field", testOptions, func(t *testing.T, s setup) string {
			return `{"nonce":"` + s.nonce + `","signature":"AA==","encoding":"pkcs7"}`
		}, "unknown field"},
		{"not JSON", testOptions, func(t *testing.T, s setup) string { return s.nonce }, "malformed token"},
		{"token too large", testOptions, func(t *testing.T, s setup) string {
			return strings.Repeat(" ", azureimds.MaxTokenSize+1)
		}, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(now())
			p := newProvisioner(t, "azure", tt.options, clk, 0)
			nonce, _, err := p.Challenge(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			tok := tt.token(t, setup{p: p, clk: clk, nonce: nonce})
			id, err := p.Attest(context.Background(), tok)
			if !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("Attest = %+v, %v; want ErrUnauthorized", id, err)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("error %q does not say %q", err, tt.detail)
			}
		})
	}
}

// TestNonceSingleUse: a nonce is consumed by the first attestation that
// presents it, also when many present it at once; a refused attestation
// does not consume it.
func TestNonceSingleUse(t *testing.T) {
	c := testChain(t)
	ctx := context.Background()
	clk := newClock(now())
	p := newProvisioner(t, "azure", testOptions, clk, 0)

	t.Run("sequential", func(t *testing.T) {
		tok := attestedFor(t, p, c, clk)
		if _, err := p.Attest(ctx, tok); err != nil {
			t.Fatalf("first Attest: %v", err)
		}
		_, err := p.Attest(ctx, tok)
		if !errors.Is(err, provisioners.ErrUnauthorized) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("reused nonce: %v, want a refusal", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		tok := attestedFor(t, p, c, clk)
		const n = 32
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for range n {
			wg.Go(func() {
				if _, err := p.Attest(ctx, tok); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				} else if !errors.Is(err, provisioners.ErrUnauthorized) {
					t.Errorf("Attest: %v", err)
				}
			})
		}
		wg.Wait()
		if ok != 1 {
			t.Fatalf("%d of %d concurrent attestations with one nonce succeeded, want 1", ok, n)
		}
	})
	t.Run("refusal keeps the nonce", func(t *testing.T) {
		nonce, _, err := p.Challenge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bad := azureDoc(nonce, "11111111-2222-3333-4444-555555555555", testVM, clk.Now(), clk.Now().Add(time.Hour))
		if _, err := p.Attest(ctx, attestedToken(nonce, sign(bad, c, false, pkcs7.OIDDigestAlgorithmSHA256))); err == nil {
			t.Fatal("accepted a subscription outside the allow-list")
		}
		good := azureDoc(nonce, testSubscription, testVM, clk.Now(), clk.Now().Add(time.Hour))
		if _, err := p.Attest(ctx, attestedToken(nonce, sign(good, c, false, pkcs7.OIDDigestAlgorithmSHA256))); err != nil {
			t.Fatalf("the nonce did not survive a refused attestation: %v", err)
		}
	})
}

// TestChallengeLimit: at the bound, a new challenge evicts the oldest
// outstanding nonce instead of being refused.
func TestChallengeLimit(t *testing.T) {
	ctx := context.Background()
	c := testChain(t)
	clk := newClock(now())
	p := newProvisioner(t, "azure", testOptions, clk, 3)
	seen := map[string]bool{}
	var nonces []string
	for range 4 {
		n, _, err := p.Challenge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seen[n] {
			t.Fatalf("nonce %s issued twice", n)
		}
		seen[n] = true
		nonces = append(nonces, n)
	}
	attest := func(nonce string) error {
		doc := azureDoc(nonce, testSubscription, testVM, clk.Now(), clk.Now().Add(6*time.Hour))
		_, err := p.Attest(ctx, attestedToken(nonce, sign(doc, c, false, pkcs7.OIDDigestAlgorithmSHA256)))
		return err
	}
	if err := attest(nonces[0]); err == nil || !strings.Contains(err.Error(), "not issued") {
		t.Fatalf("the evicted oldest nonce: %v, want a refusal", err)
	}
	if err := attest(nonces[1]); err != nil {
		t.Fatalf("a nonce within the bound: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := p.Challenge(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Challenge with a canceled context = %v", err)
	}
}

// TestChallengeFlood: anonymous callers asking for challenges as fast as
// they can, far beyond the default bound of 100,000, never get a refusal,
// and an agent that asks in the middle of the flood still attests.
func TestChallengeFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("issues 250,000 nonces")
	}
	ctx := context.Background()
	c := testChain(t)
	clk := newClock(now())
	p := newProvisioner(t, "azure", testOptions, clk, 0)
	flood := func(n int) {
		for i := range n {
			if _, _, err := p.Challenge(ctx); err != nil {
				t.Fatalf("Challenge %d: %v", i, err)
			}
		}
	}
	flood(azureimds.DefaultMaxChallenges + 50_000)
	var wg sync.WaitGroup
	wg.Go(func() { flood(azureimds.DefaultMaxChallenges / 2) })
	tok := attestedFor(t, p, c, clk)
	wg.Go(func() { flood(azureimds.DefaultMaxChallenges / 2) })
	if _, err := p.Attest(ctx, tok); err != nil {
		t.Fatalf("an agent's attestation during the flood: %v", err)
	}
	wg.Wait()
}

// TestTOFU issues through a real CA and store: a VM's second enrollment,
// even with a fresh nonce, is refused with ErrReplay.
func TestTOFU(t *testing.T) {
	c := testChain(t)
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, _ := testca.Authority(t, "azure-test", st, nil)
	tmpl, err := provisioners.NewTemplate(azureimds.DefaultTemplate, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(now())
	p := newProvisioner(t, "azure", testOptions, clk, 0)
	enroll := func() error {
		id, err := p.Attest(ctx, attestedFor(t, p, c, clk))
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		spiffeID, _, err := tmpl.Render(authority.TrustDomain(), id.Claims)
		if err != nil {
			t.Fatal(err)
		}
		if want := "spiffe://example.org/azure/" + testSubscription + "/" + testVM; spiffeID != want {
			t.Fatalf("SPIFFE ID = %q, want %q", spiffeID, want)
		}
		key, err := ca.GenerateKey(ca.ECP256)
		if err != nil {
			t.Fatal(err)
		}
		_, err = authority.Issue(ctx, &ca.Request{PublicKey: key.Public(), SPIFFEID: spiffeID, Provisioner: "azure",
			Once: id.Once, DefaultTTL: 5 * time.Minute, MaxTTL: time.Hour})
		return err
	}
	if err := enroll(); err != nil {
		t.Fatalf("first enrollment: %v", err)
	}
	if err := enroll(); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("second enrollment = %v, want store.ErrReplay", err)
	}
}

func TestShippedCertificates(t *testing.T) {
	// The shipped intermediates chain to the shipped roots, and New
	// loads both by default.
	cfg, err := azureimds.ParseConfig([]byte(`{"subscriptions": ["` + testSubscription + `"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := azureimds.New("azure", cfg, azureimds.Options{}); err != nil {
		t.Fatalf("New with the shipped certificates: %v", err)
	}
	roots := readCerts(t, "certs/roots.pem")
	inters := readCerts(t, "certs/intermediates.pem")
	if len(roots) != 3 || len(inters) != 6 {
		t.Fatalf("%d roots and %d intermediates, want 3 and 6", len(roots), len(inters))
	}
	for _, r := range roots {
		if err := r.CheckSignatureFrom(r); err != nil {
			t.Errorf("root %s: %v", r.Subject.CommonName, err)
		}
	}
	for _, in := range inters {
		ok := false
		for _, r := range roots {
			if in.CheckSignatureFrom(r) == nil {
				ok = true
			}
		}
		if !ok {
			t.Errorf("intermediate %s is not signed by a shipped root", in.Subject.CommonName)
		}
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sub := `"subscriptions": ["` + testSubscription + `"]`
	tests := []struct {
		name, options, err string
	}{
		{"shipped", `{` + sub + `}`, ""},
		{"files", testOptions, ""},
		{"missing roots_file", `{` + sub + `, "roots_file": "` + filepath.Join(dir, "nope.pem") + `"}`, "roots_file"},
		{"missing intermediates_file", `{` + sub + `, "intermediates_file": "` + filepath.Join(dir, "nope.pem") + `"}`, "intermediates_file"},
		{"empty roots_file", `{` + sub + `, "roots_file": "` + write("empty.pem", "# none\n") + `"}`, "roots_file: " + filepath.Join(dir, "empty.pem") + ": no certificates"},
		{"key in roots_file", `{` + sub + `, "roots_file": "` + write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") + `"}`, `PEM type "PRIVATE KEY"`},
		{"bad certificate", `{` + sub + `, "intermediates_file": "` + write("bad.pem", "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n") + `"}`, "intermediates_file"},
		{"broken block", `{` + sub + `, "roots_file": "` + write("broken.pem", "-----BEGIN CERTIFICATE-----\n!!\n") + `"}`, "malformed PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := azureimds.ParseConfig([]byte(tt.options))
			if err != nil {
				t.Fatal(err)
			}
			_, err = azureimds.New("azure", cfg, azureimds.Options{})
			if tt.err == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("New = %v, want an error saying %q", err, tt.err)
			}
		})
	}
	good := &azureimds.Config{Subscriptions: []string{testSubscription}}
	for name, f := range map[string]func() error{
		"empty name":       func() error { _, err := azureimds.New("", good, azureimds.Options{}); return err },
		"nil config":       func() error { _, err := azureimds.New("azure", nil, azureimds.Options{}); return err },
		"no subscriptions": func() error { _, err := azureimds.New("azure", &azureimds.Config{}, azureimds.Options{}); return err },
		"bad nonce_ttl": func() error {
			_, err := azureimds.New("azure", &azureimds.Config{Subscriptions: []string{testSubscription}, NonceTTL: "2h"}, azureimds.Options{})
			return err
		},
		"negative MaxChallenges": func() error { _, err := azureimds.New("azure", good, azureimds.Options{MaxChallenges: -1}); return err },
	} {
		if f() == nil {
			t.Errorf("New accepted %s", name)
		}
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, raw string
		want      *azureimds.Config
		err       string
	}{
		{"minimal", `{"subscriptions": ["` + testSubscription + `"]}`, &azureimds.Config{Subscriptions: []string{testSubscription}}, ""},
		{"full", `{"subscriptions": ["` + testSubscription + `", "11111111-2222-3333-4444-55555555AAAA"], "roots_file": "/etc/agentca/azure-roots.pem",
			"intermediates_file": "/etc/agentca/azure-intermediates.pem", "nonce_ttl": "2m"}`,
			&azureimds.Config{Subscriptions: []string{testSubscription, "11111111-2222-3333-4444-55555555AAAA"},
				RootsFile: "/etc/agentca/azure-roots.pem", IntermediatesFile: "/etc/agentca/azure-intermediates.pem", NonceTTL: "2m"}, ""},
		{"empty", ``, nil, "subscriptions: required"},
		{"empty object", `{}`, nil, "subscriptions: required"},
		{"null", `null`, nil, "want a JSON object"},
		{"unknown field", `{"subscriptions": ["` + testSubscription + `"], "tenant_id": "x"}`, nil, `"tenant_id": unknown field`},
		{"trailing data", `{"subscriptions": ["` + testSubscription + `"]}]`, nil, "data after the object"},
		{"subscriptions not a list", `{"subscriptions": "` + testSubscription + `"}`, nil, "subscriptions: want []string"},
		{"subscription not a GUID", `{"subscriptions": ["` + testSubscription + `", "my-subscription"]}`, nil, "subscriptions[1]"},
		{"roots_file with spaces", `{"subscriptions": ["` + testSubscription + `"], "roots_file": "roots.pem "}`, nil, "roots_file"},
		{"intermediates_file with spaces", `{"subscriptions": ["` + testSubscription + `"], "intermediates_file": " i.pem"}`, nil, "intermediates_file"},
		{"nonce_ttl not a duration", `{"subscriptions": ["` + testSubscription + `"], "nonce_ttl": "5 minutes"}`, nil, "nonce_ttl"},
		{"nonce_ttl a number", `{"subscriptions": ["` + testSubscription + `"], "nonce_ttl": 300}`, nil, "nonce_ttl: want string"},
		{"nonce_ttl zero", `{"subscriptions": ["` + testSubscription + `"], "nonce_ttl": "0s"}`, nil, "nonce_ttl: must be positive"},
		{"nonce_ttl too long", `{"subscriptions": ["` + testSubscription + `"], "nonce_ttl": "2h"}`, nil, "nonce_ttl: at most 1h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := azureimds.ParseConfig([]byte(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseConfig = %+v, %v; want an error saying %q", got, err, tt.err)
				}
				if !strings.HasPrefix(err.Error(), "azureimds: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got.RootsFile != tt.want.RootsFile || got.IntermediatesFile != tt.want.IntermediatesFile || got.NonceTTL != tt.want.NonceTTL ||
				strings.Join(got.Subscriptions, ",") != strings.Join(tt.want.Subscriptions, ",") {
				t.Fatalf("ParseConfig = %+v, want %+v", got, tt.want)
			}
		})
	}
}
