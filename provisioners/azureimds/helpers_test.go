package azureimds_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/agentca/agentca/provisioners/azureimds"
)

var update = flag.Bool("update", false, "rewrite testdata/: the test Azure chain and the fuzz seeds")

// The test chain, fixed in testdata/ so that the fuzz seeds carry valid
// signatures: a root (roots_file), an intermediate (intermediates_file)
// and a signer for metadata.azure.com, all RSA-2048, shaped like Azure's
// (Microsoft TLS RSA Root G2 → Microsoft TLS G2 RSA CA OCSP 02 →
// metadata.azure.com, serverAuth).
const (
	rootFile      = "testdata/root.pem"
	interFile     = "testdata/intermediate.pem"
	interKeyFile  = "testdata/intermediate-key.pem"
	signerFile    = "testdata/signer.pem"
	signerKeyFile = "testdata/signer-key.pem"
)

const (
	testSubscription = "8d10da13-8125-4ba9-a717-bf7490507b3d"
	testVM           = "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
)

// fuzzTime is the fuzz target's clock and the seeds' creation time.
var fuzzTime = time.Date(2030, time.January, 1, 12, 0, 0, 0, time.UTC)

const fuzzNonce = "0123456789"

func TestMain(m *testing.M) {
	flag.Parse()
	if *update {
		if err := writeTestdata(); err != nil {
			fmt.Fprintln(os.Stderr, "update:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// chain is a root → intermediate → signer hierarchy.
type chain struct {
	root, inter, signer *x509.Certificate
	interKey, signerKey *rsa.PrivateKey
}

func mustKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	if tmpl.SerialNumber == nil {
		s, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		tmpl.SerialNumber = s
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

var validFrom, validTo = time.Now().Add(-time.Hour).Truncate(time.Second), time.Date(2040, time.January, 1, 0, 0, 0, 0, time.UTC)

// newChain makes a chain whose signer is issued for dnsName.
func newChain(rootName, dnsName string) *chain {
	rootKey, interKey, signerKey := mustKey(), mustKey(), mustKey()
	root := mustCert(&x509.Certificate{
		Subject:   pkix.Name{Country: []string{"US"}, Organization: []string{"Microsoft Corporation"}, CommonName: rootName},
		NotBefore: validFrom, NotAfter: validTo,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}, nil, rootKey.Public(), rootKey)
	inter := mustCert(&x509.Certificate{
		Subject:   pkix.Name{Country: []string{"US"}, Organization: []string{"Microsoft Corporation"}, CommonName: "Microsoft TLS G2 RSA CA OCSP 02"},
		NotBefore: validFrom, NotAfter: validTo,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true,
	}, root, interKey.Public(), rootKey)
	return &chain{root: root, inter: inter, interKey: interKey, signerKey: signerKey,
		signer: newSigner(inter, interKey, signerKey, dnsName)}
}

// newSigner issues a TLS certificate for dnsName under inter.
func newSigner(inter *x509.Certificate, interKey, key *rsa.PrivateKey, dnsName string) *x509.Certificate {
	return mustCert(&x509.Certificate{
		Subject:     pkix.Name{Country: []string{"US"}, Province: []string{"WA"}, Locality: []string{"Redmond"}, Organization: []string{"Microsoft Corporation"}, CommonName: dnsName},
		DNSNames:    []string{dnsName},
		NotBefore:   validFrom,
		NotAfter:    validTo,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, inter, key.Public(), interKey)
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *rsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

func writeTestdata() error {
	c := newChain("Microsoft TLS RSA Root G2", "metadata.azure.com")
	for f, b := range map[string][]byte{
		rootFile: certPEM(c.root), interFile: certPEM(c.inter), signerFile: certPEM(c.signer),
		interKeyFile: keyPEM(c.interKey), signerKeyFile: keyPEM(c.signerKey),
	} {
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return err
		}
	}
	good := azureDoc(fuzzNonce, testSubscription, testVM, fuzzTime.Add(-10*time.Second), fuzzTime.Add(6*time.Hour))
	seeds := map[string]string{
		"valid":            attestedToken(fuzzNonce, sign(good, c, false, pkcs7.OIDDigestAlgorithmSHA256)),
		"with-chain":       attestedToken(fuzzNonce, sign(good, c, true, pkcs7.OIDDigestAlgorithmSHA256)),
		"other-nonce":      attestedToken("9876543210", sign(good, c, false, pkcs7.OIDDigestAlgorithmSHA256)),
		"other-sub":        attestedToken(fuzzNonce, sign(azureDoc(fuzzNonce, "00000000-0000-0000-0000-000000000000", testVM, fuzzTime, fuzzTime.Add(time.Hour)), c, false, pkcs7.OIDDigestAlgorithmSHA256)),
		"content-not-json": attestedToken(fuzzNonce, sign([]byte("nonce=0123456789"), c, false, pkcs7.OIDDigestAlgorithmSHA256)),
		"empty":            `{}`,
		"not-json":         `nonce=0123456789`,
		"unknown-field":    `{"nonce":"0123456789","signature":"AA==","encoding":"pkcs7"}`,
		"bad-base64":       `{"nonce":"0123456789","signature":"!!"}`,
		"garbage-pkcs7":    `{"nonce":"0123456789","signature":"MIAGCSqGSIb3DQEHAqCAMIACAQEx"}`,
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzAzureIMDSAttest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, tok := range seeds {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", tok)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

var fixture struct {
	once sync.Once
	c    *chain
	err  error
}

// testChain returns the chain in testdata/.
func testChain(t testing.TB) *chain {
	t.Helper()
	fixture.once.Do(func() {
		read := func(f string) []byte {
			b, err := os.ReadFile(f)
			if err != nil && fixture.err == nil {
				fixture.err = err
			}
			blk, _ := pem.Decode(b)
			if blk == nil {
				return nil
			}
			return blk.Bytes
		}
		cert := func(f string) *x509.Certificate {
			c, err := x509.ParseCertificate(read(f))
			if err != nil && fixture.err == nil {
				fixture.err = fmt.Errorf("%s: %w", f, err)
			}
			return c
		}
		key := func(f string) *rsa.PrivateKey {
			k, err := x509.ParsePKCS8PrivateKey(read(f))
			if err != nil {
				if fixture.err == nil {
					fixture.err = fmt.Errorf("%s: %w", f, err)
				}
				return nil
			}
			return k.(*rsa.PrivateKey)
		}
		fixture.c = &chain{root: cert(rootFile), inter: cert(interFile), signer: cert(signerFile),
			interKey: key(interKeyFile), signerKey: key(signerKeyFile)}
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.c
}

// azureDoc is attested-data content in Azure's format: compact JSON, keys
// in Azure's order, times as "MM/dd/yy HH:mm:ss -0000".
func azureDoc(nonce, subscription, vmID string, created, expires time.Time) []byte {
	const layout = "01/02/06 15:04:05 -0000"
	b, _ := json.Marshal(struct {
		LicenseType string `json:"licenseType"`
		Nonce       string `json:"nonce"`
		Plan        struct {
			Name      string `json:"name"`
			Product   string `json:"product"`
			Publisher string `json:"publisher"`
		} `json:"plan"`
		SKU            string `json:"sku"`
		SubscriptionID string `json:"subscriptionId"`
		TimeStamp      struct {
			CreatedOn string `json:"createdOn"`
			ExpiresOn string `json:"expiresOn"`
		} `json:"timeStamp"`
		VMID string `json:"vmId"`
	}{
		Nonce: nonce, SKU: "22_04-lts-gen2", SubscriptionID: subscription, VMID: vmID,
		TimeStamp: struct {
			CreatedOn string `json:"createdOn"`
			ExpiresOn string `json:"expiresOn"`
		}{created.UTC().Format(layout), expires.UTC().Format(layout)},
	})
	return b
}

// sign makes the attested-data PKCS#7 over content with c's signer, which
// the message carries, as Azure's does; withChain adds the intermediate,
// which Azure's does not.
func sign(content []byte, c *chain, withChain bool, digest asn1.ObjectIdentifier) string {
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		panic(err)
	}
	sd.SetDigestAlgorithm(digest)
	if withChain {
		err = sd.AddSignerChain(c.signer, c.signerKey, []*x509.Certificate{c.inter}, pkcs7.SignerInfoConfig{})
	} else {
		err = sd.AddSigner(c.signer, c.signerKey, pkcs7.SignerInfoConfig{})
	}
	if err != nil {
		panic(err)
	}
	der, err := sd.Finish()
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func attestedToken(nonce, signature string) string {
	b, _ := json.Marshal(map[string]string{"nonce": nonce, "signature": signature})
	return string(b)
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock        { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// testOptions trusts the test chain's root and intermediate.
const testOptions = `{"subscriptions": ["` + testSubscription + `"], "roots_file": "` + rootFile + `", "intermediates_file": "` + interFile + `"}`

func newProvisioner(t testing.TB, name, options string, clk *clock, max int) *azureimds.Provisioner {
	t.Helper()
	cfg, err := azureimds.ParseConfig([]byte(options))
	if err != nil {
		t.Fatal(err)
	}
	p, err := azureimds.New(name, cfg, azureimds.Options{Now: clk.Now, MaxChallenges: max})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readCerts reads every certificate of a PEM file.
func readCerts(t testing.TB, file string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
