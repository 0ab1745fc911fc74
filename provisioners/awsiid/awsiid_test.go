package awsiid_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/agentca/agentca/ca"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/provisioners"
	"github.com/agentca/agentca/provisioners/awsiid"
	"github.com/agentca/agentca/store"
	"github.com/agentca/agentca/store/bolt"
)

// newProvisioner returns an aws-iid provisioner over testdata/aws-certs.pem
// whose clock reads now.
func newProvisioner(t testing.TB, name, options string, now time.Time) *awsiid.Provisioner {
	t.Helper()
	cfg, err := awsiid.ParseConfig([]byte(options))
	if err != nil {
		t.Fatal(err)
	}
	p, err := awsiid.New(name, cfg, awsiid.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const testOptions = `{"accounts": ["123456789012"], "certificates_file": "testdata/aws-certs.pem"}`

func TestAttestAccepts(t *testing.T) {
	key, cert := awsKey(t)
	doc := awsDoc(testAccount, "us-east-1", testInstance, start.Add(-2*time.Minute))
	wantClaims := map[string]string{
		"account":           "123456789012",
		"region":            "us-east-1",
		"instance_id":       "i-0123456789abcdef0",
		"availability_zone": "us-east-1a",
		"image_id":          "ami-0abcdef1234567890",
		"instance_type":     "t3.micro",
		"private_ip":        "172.31.1.111",
	}
	tests := []struct {
		name, options, token string
	}{
		{"rsa2048", testOptions, rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256))},
		{"rsa2048 SHA-512", testOptions, rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA512))},
		{"legacy signature", testOptions, legacyToken(doc, signLegacy(doc, key))},
		{"allow-lists and age", `{"accounts": ["999999999999", "123456789012"], "regions": ["eu-west-1", "us-east-1"],
			"max_instance_age": "5m", "certificates_file": "testdata/aws-certs.pem"}`,
			rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256))},
		// IMDS serves rsa2048 and signature with line breaks; the token
		// may carry them as served.
		{"base64 with newlines", testOptions, rsa2048Token(doc, wrap64(signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvisioner(t, "aws", tt.options, start)
			id, err := p.Attest(context.Background(), tt.token)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if id.SPIFFEID != "" || id.JoinToken != nil || id.DNSNames != nil {
				t.Errorf("Identity = %+v, want only Once and Claims", id)
			}
			if want := []string{"aws-iid:aws:123456789012:i-0123456789abcdef0"}; len(id.Once) != 1 || id.Once[0] != want[0] {
				t.Errorf("Once = %q, want %q", id.Once, want)
			}
			if !maps.Equal(id.Claims, wantClaims) {
				t.Errorf("Claims = %v, want %v", id.Claims, wantClaims)
			}
		})
	}
}

// wrap64 breaks s into 64-character lines, as IMDS serves base64.
func wrap64(s string) string {
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s)
	return b.String()
}

func TestAttestRefuses(t *testing.T) {
	key, cert := awsKey(t)
	ctx := context.Background()
	doc := awsDoc(testAccount, "us-east-1", testInstance, start.Add(-2*time.Minute))
	good := signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256)

	// An attacker's key, with a certificate of its own: once under
	// another serial, once a perfect copy of the AWS certificate's
	// issuer and serial, so that only the key differs. Both are embedded
	// in the message they sign.
	attacker, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	attackerCert := newAWSCert(attacker, randomSerial())
	cloneCert := newAWSCert(attacker, cert.SerialNumber)

	// Flip a bit of the signature, the last field of the message.
	der, _ := base64.StdEncoding.DecodeString(good)
	der[len(der)-10] ^= 0x01
	badSig := base64.StdEncoding.EncodeToString(der)

	other := awsDoc(testAccount, "us-east-1", "i-0fedcba9876543210", start.Add(-2*time.Minute))
	otherAccount := awsDoc("210987654321", "us-east-1", testInstance, start.Add(-2*time.Minute))
	euDoc := awsDoc(testAccount, "eu-west-1", testInstance, start.Add(-2*time.Minute))
	noCertRegion := awsDoc(testAccount, "ap-south-2", testInstance, start.Add(-2*time.Minute))
	old := awsDoc(testAccount, "us-east-1", testInstance, start.Add(-time.Hour))

	detached := func() string {
		sd, _ := pkcs7.NewSignedData(doc)
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
		_ = sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{})
		sd.Detach()
		b, _ := sd.Finish()
		return base64.StdEncoding.EncodeToString(b)
	}()
	twoSigners := func() string {
		sd, _ := pkcs7.NewSignedData(doc)
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
		_ = sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{})
		_ = sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{})
		b, _ := sd.Finish()
		return base64.StdEncoding.EncodeToString(b)
	}()
	signedWeird := func(mut func(string) string) string {
		d := []byte(mut(string(doc)))
		return rsa2048Token(d, signPKCS7(d, cert, key, pkcs7.OIDDigestAlgorithmSHA256))
	}

	tests := []struct {
		name, options, token, detail string
	}{
		{"bad signature", testOptions, rsa2048Token(doc, badSig), "not signed by the region's AWS certificate"},
		{"content is not the document", testOptions, rsa2048Token(other, good), "signed content is not the document"},
		{"document with a byte added", testOptions, rsa2048Token(append(doc, '\n'), good), "signed content is not the document"},
		{"detached signature", testOptions, rsa2048Token(doc, detached), "signed content is not the document"},
		{"attacker's certificate embedded", testOptions,
			rsa2048Token(doc, signPKCS7(doc, attackerCert, attacker, pkcs7.OIDDigestAlgorithmSHA256)), "not signed by the region's AWS certificate"},
		{"attacker's clone of the AWS certificate embedded", testOptions,
			rsa2048Token(doc, signPKCS7(doc, cloneCert, attacker, pkcs7.OIDDigestAlgorithmSHA256)), "not signed by the region's AWS certificate"},
		{"SHA-1 digest", testOptions, rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA1)), "digest algorithm"},
		{"two signers", testOptions, rsa2048Token(doc, twoSigners), "2 signers"},
		{"region not in allow-list", `{"accounts": ["123456789012"], "regions": ["us-east-1"], "certificates_file": "testdata/aws-certs.pem"}`,
			rsa2048Token(euDoc, signPKCS7(euDoc, cert, key, pkcs7.OIDDigestAlgorithmSHA256)), `region "eu-west-1" not allowed`},
		{"account not in allow-list", testOptions,
			rsa2048Token(otherAccount, signPKCS7(otherAccount, cert, key, pkcs7.OIDDigestAlgorithmSHA256)), `account "210987654321" not allowed`},
		{"instance older than max_instance_age", `{"accounts": ["123456789012"], "max_instance_age": "30m", "certificates_file": "testdata/aws-certs.pem"}`,
			rsa2048Token(old, signPKCS7(old, cert, key, pkcs7.OIDDigestAlgorithmSHA256)), "more than max_instance_age"},
		{"region without certificate", testOptions,
			rsa2048Token(noCertRegion, signPKCS7(noCertRegion, cert, key, pkcs7.OIDDigestAlgorithmSHA256)), `no certificate for region "ap-south-2"`},
		{"region without certificate, shipped set", `{"accounts": ["123456789012"]}`,
			rsa2048Token(doc, good), "not signed by the region's AWS certificate"},
		{"legacy signature by another key", testOptions, legacyToken(doc, signLegacy(doc, attacker)), "not signed by the region's AWS certificate"},
		{"legacy signature of another document", testOptions, legacyToken(doc, signLegacy(other, key)), "not signed by the region's AWS certificate"},
		{"legacy signature truncated", testOptions, legacyToken(doc, signLegacy(doc, key)[:40]), "signature"},
		{"legacy signature without a certificate for it", `{"accounts": ["123456789012"]}`,
			legacyToken(doc, signLegacy(doc, key)), "no certificate for the legacy signature"},
		{"not JSON", testOptions, "i-0123456789abcdef0", "malformed token"},
		{"unknown token field", testOptions, `{"document":"e30=","rsa2048":"AA==","pkcs7":"AA=="}`, "malformed token"},
		{"both signatures", testOptions, `{"document":"e30=","rsa2048":"AA==","signature":"AA=="}`, "exactly one"},
		{"no signature", testOptions, `{"document":"e30="}`, "exactly one"},
		{"no document", testOptions, `{"rsa2048":"AA=="}`, "no document"},
		{"document not base64", testOptions, `{"document":"{}","rsa2048":"AA=="}`, "document"},
		{"rsa2048 not base64", testOptions, rsa2048Token(doc, "%%%"), "not base64"},
		{"rsa2048 not PKCS#7", testOptions, rsa2048Token(doc, "MAA="), "malformed PKCS#7"},
		{"document not JSON", testOptions, rsa2048Token([]byte("region=us-east-1"), good), "malformed document"},
		{"token too large", testOptions, strings.Repeat(" ", awsiid.MaxTokenSize+1), "larger than"},
		{"signed instanceId malformed", testOptions, signedWeird(func(s string) string {
			return strings.Replace(s, testInstance, "i-../../x", 1)
		}), "instanceId"},
		{"signed pendingTime malformed", testOptions, signedWeird(func(s string) string {
			return strings.Replace(s, `"pendingTime" : "2030-03-01T11:58:00Z"`, `"pendingTime" : "yesterday"`, 1)
		}), "pendingTime"},
		{"signed zone of another region", testOptions, signedWeird(func(s string) string {
			return strings.Replace(s, `"us-east-1a"`, `"eu-west-1a"`, 1)
		}), "availabilityZone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvisioner(t, "aws", tt.options, start)
			id, err := p.Attest(ctx, tt.token)
			if !errors.Is(err, provisioners.ErrUnauthorized) {
				t.Fatalf("Attest = %+v, %v; want ErrUnauthorized", id, err)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("error %q does not say %q", err, tt.detail)
			}
		})
	}
}

func TestAttestContextCanceled(t *testing.T) {
	key, cert := awsKey(t)
	doc := awsDoc(testAccount, "us-east-1", testInstance, start)
	p := newProvisioner(t, "aws", testOptions, start)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Attest(ctx, rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256))); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attest = %v, want context.Canceled", err)
	}
}

// TestTOFU issues through a real CA and store: the first enrollment of an
// instance records its replay key, the second is refused with ErrReplay,
// also through another provisioner name's key space only when the name
// matches.
func TestTOFU(t *testing.T) {
	key, cert := awsKey(t)
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "agentca.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	authority, _ := testca.Authority(t, "aws-test", st, nil)
	tmpl, err := provisioners.NewTemplate(awsiid.DefaultTemplate, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := newProvisioner(t, "aws", testOptions, now)
	doc := awsDoc(testAccount, "us-east-1", testInstance, now.Add(-time.Minute))
	tok := rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256))

	enroll := func() error {
		id, err := p.Attest(ctx, tok)
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		spiffeID, _, err := tmpl.Render(authority.TrustDomain(), id.Claims)
		if err != nil {
			t.Fatal(err)
		}
		if want := "spiffe://example.org/aws/123456789012/us-east-1/i-0123456789abcdef0"; spiffeID != want {
			t.Fatalf("SPIFFE ID = %q, want %q", spiffeID, want)
		}
		leafKey, err := ca.GenerateKey(ca.ECP256)
		if err != nil {
			t.Fatal(err)
		}
		_, err = authority.Issue(ctx, &ca.Request{PublicKey: leafKey.Public(), SPIFFEID: spiffeID, Provisioner: "aws",
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
	data, err := os.ReadFile("certs/aws-rsa2048.pem")
	if err != nil {
		t.Fatal(err)
	}
	regions := map[string]bool{}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", b.Headers["Region"], err)
		}
		// Self-signed: the check proves every byte was copied right.
		if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
			t.Errorf("%s: self-signature: %v", b.Headers["Region"], err)
		}
		if k, ok := c.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
			t.Errorf("%s: not an RSA-2048 key", b.Headers["Region"])
		}
		if b.Headers["Use"] != "" {
			t.Errorf("%s: Use %q, want the rsa2048 default", b.Headers["Region"], b.Headers["Use"])
		}
		if regions[b.Headers["Region"]] {
			t.Errorf("%s: listed twice", b.Headers["Region"])
		}
		regions[b.Headers["Region"]] = true
	}
	if len(regions) != 39 {
		t.Errorf("%d regions, want 39", len(regions))
	}
	// Every shipped region can be allow-listed with the shipped set.
	var list []string
	for r := range regions {
		list = append(list, `"`+r+`"`)
	}
	cfg, err := awsiid.ParseConfig([]byte(`{"accounts": ["123456789012"], "regions": [` + strings.Join(list, ",") + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := awsiid.New("aws", cfg, awsiid.Options{}); err != nil {
		t.Fatalf("New with the shipped certificates: %v", err)
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
	_, cert := awsKey(t)
	certPEM := func(headers map[string]string) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: headers, Bytes: cert.Raw}))
	}
	tests := []struct {
		name, options, err string
	}{
		{"shipped regions", `{"accounts": ["123456789012"], "regions": ["us-east-1", "eu-central-2", "cn-north-1"]}`, ""},
		{"region without shipped certificate", `{"accounts": ["123456789012"], "regions": ["xx-nowhere-1"]}`, `regions[0]: no certificate for region "xx-nowhere-1"`},
		{"region without certificate in file", `{"accounts": ["123456789012"], "regions": ["us-east-1", "ap-south-2"], "certificates_file": "testdata/aws-certs.pem"}`,
			`regions[1]: no certificate for region "ap-south-2"`},
		{"missing file", `{"accounts": ["123456789012"], "certificates_file": "` + filepath.Join(dir, "nope.pem") + `"}`, "certificates_file"},
		{"file without Region header", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("noregion.pem", certPEM(nil)) + `"}`, "no Region header"},
		{"file with unknown header", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("header.pem", certPEM(map[string]string{"Region": "us-east-1", "Zone": "a"})) + `"}`, `unknown PEM header "Zone"`},
		{"file with unknown use", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("use.pem", certPEM(map[string]string{"Region": "us-east-1", "Use": "pkcs7"})) + `"}`, `Use "pkcs7"`},
		{"file with bad region", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("region.pem", certPEM(map[string]string{"Region": "US East"})) + `"}`, `Region "US East"`},
		{"file without certificates", `{"accounts": ["123456789012"], "certificates_file": "` + write("empty.pem", "# nothing\n") + `"}`, "no certificates"},
		{"file with a key", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") + `"}`, `PEM type "PRIVATE KEY"`},
		{"file with a broken block", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("broken.pem", certPEM(map[string]string{"Region": "us-east-1"})+"-----BEGIN CERTIFICATE-----\n!!\n") + `"}`, "malformed PEM block"},
		{"file with a bad certificate", `{"accounts": ["123456789012"], "certificates_file": "` +
			write("bad.pem", "-----BEGIN CERTIFICATE-----\nRegion: us-east-1\n\nMAA=\n-----END CERTIFICATE-----\n") + `"}`, "block 1 (us-east-1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := awsiid.ParseConfig([]byte(tt.options))
			if err != nil {
				t.Fatal(err)
			}
			_, err = awsiid.New("aws", cfg, awsiid.Options{})
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
	if _, err := awsiid.New("", &awsiid.Config{Accounts: []string{testAccount}}, awsiid.Options{}); err == nil {
		t.Error("New accepted an empty name")
	}
	if _, err := awsiid.New("aws", nil, awsiid.Options{}); err == nil {
		t.Error("New accepted a nil config")
	}
	if _, err := awsiid.New("aws", &awsiid.Config{}, awsiid.Options{}); err == nil {
		t.Error("New accepted a config without accounts")
	}
	if _, err := awsiid.New("aws", &awsiid.Config{Accounts: []string{testAccount}, MaxInstanceAge: "-1h"}, awsiid.Options{}); err == nil {
		t.Error("New accepted a negative max_instance_age")
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, raw string
		want      *awsiid.Config
		err       string
	}{
		{"minimal", `{"accounts": ["123456789012"]}`, &awsiid.Config{Accounts: []string{"123456789012"}}, ""},
		{"full", `{"accounts": ["123456789012", "000000000001"], "regions": ["us-east-1", "us-gov-west-1", "eusc-de-east-1"],
			"certificates_file": "/etc/agentca/aws.pem", "max_instance_age": "10m"}`,
			&awsiid.Config{Accounts: []string{"123456789012", "000000000001"}, Regions: []string{"us-east-1", "us-gov-west-1", "eusc-de-east-1"},
				CertificatesFile: "/etc/agentca/aws.pem", MaxInstanceAge: "10m"}, ""},
		{"empty", ``, nil, "accounts: required"},
		{"empty object", `{}`, nil, "accounts: required"},
		{"null", `null`, nil, "want a JSON object"},
		{"array", `[]`, nil, "want a JSON object"},
		{"unknown field", `{"accounts": ["123456789012"], "account": "123456789012"}`, nil, `"account": unknown field`},
		{"trailing data", `{"accounts": ["123456789012"]} {}`, nil, "data after the object"},
		{"accounts not a list", `{"accounts": "123456789012"}`, nil, "accounts: want []string"},
		{"account too short", `{"accounts": ["12345678901"]}`, nil, "accounts[0]"},
		{"account with letters", `{"accounts": ["123456789012", "12345678901x"]}`, nil, "accounts[1]"},
		{"bad region", `{"accounts": ["123456789012"], "regions": ["us-east-1", "Virginia"]}`, nil, "regions[1]"},
		{"region with path", `{"accounts": ["123456789012"], "regions": ["us-east-1/.."]}`, nil, "regions[0]"},
		{"file with spaces", `{"accounts": ["123456789012"], "certificates_file": " aws.pem"}`, nil, "certificates_file"},
		{"age not a duration", `{"accounts": ["123456789012"], "max_instance_age": "10 minutes"}`, nil, "max_instance_age"},
		{"age a number", `{"accounts": ["123456789012"], "max_instance_age": 600}`, nil, "max_instance_age: want string"},
		{"age zero", `{"accounts": ["123456789012"], "max_instance_age": "0s"}`, nil, "max_instance_age: must be positive"},
		{"age negative", `{"accounts": ["123456789012"], "max_instance_age": "-5m"}`, nil, "max_instance_age: must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := awsiid.ParseConfig([]byte(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseConfig = %+v, %v; want an error saying %q", got, err, tt.err)
				}
				if !strings.HasPrefix(err.Error(), "awsiid: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if got.CertificatesFile != tt.want.CertificatesFile || got.MaxInstanceAge != tt.want.MaxInstanceAge ||
				strings.Join(got.Accounts, ",") != strings.Join(tt.want.Accounts, ",") ||
				strings.Join(got.Regions, ",") != strings.Join(tt.want.Regions, ",") {
				t.Fatalf("ParseConfig = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestConcurrentAttest(t *testing.T) {
	key, cert := awsKey(t)
	p := newProvisioner(t, "aws", testOptions, start)
	doc := awsDoc(testAccount, "us-east-1", testInstance, start)
	tok := rsa2048Token(doc, signPKCS7(doc, cert, key, pkcs7.OIDDigestAlgorithmSHA256))
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := p.Attest(context.Background(), tok)
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
