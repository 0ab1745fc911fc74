package agent_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/provisioners/awsiid"
	"github.com/agentca/agentca/provisioners/azureimds"
)

// cloudTAWS is an EC2 instance metadata service that implements IMDSv2
// as AWS does: PUT /latest/api/token with a TTL header returns a session
// token; every GET without a valid token is refused with 401.
type cloudTAWS struct {
	*httptest.Server
	doc, rsa2048 []byte // what the instance-identity endpoints serve

	mu        sync.Mutex
	tokens    map[string]bool
	puts      int
	tokenless int // GETs refused for want of a token
	ttl       string
	status    int // if set, every answer has this status
}

func cloudTNewAWS(t *testing.T, doc, rsa2048 []byte) *cloudTAWS {
	s := &cloudTAWS{doc: doc, rsa2048: rsa2048, tokens: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *cloudTAWS) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.puts++
		s.ttl = r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds")
		if n, err := strconv.Atoi(s.ttl); err != nil || n < 1 || n > 21600 || r.Header.Get("X-Forwarded-For") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		tok := fmt.Sprintf("AQAEA%d-session-token==", len(s.tokens))
		s.tokens[tok] = true
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", s.ttl)
		fmt.Fprint(w, tok)
		return
	}
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if !s.tokens[r.Header.Get("X-aws-ec2-metadata-token")] {
		s.tokenless++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/latest/dynamic/instance-identity/document":
		w.Header().Set("Content-Type", "text/plain")
		w.Write(s.doc)
	case "/latest/dynamic/instance-identity/rsa2048":
		w.Header().Set("Content-Type", "text/plain")
		w.Write(s.rsa2048)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// cloudTKey makes an RSA-2048 key.
func cloudTKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cloudTCert issues a certificate from tmpl under parent (self-signed when
// parent is nil).
func cloudTCert(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cloudTSign makes a PKCS#7 SignedData over content, SHA-256.
func cloudTSign(t *testing.T, content []byte, cert *x509.Certificate, key crypto.PrivateKey) []byte {
	t.Helper()
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// cloudTBase64Lines is base64 in 64-column lines, as IMDS serves it.
func cloudTBase64Lines(b []byte) []byte {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 64 {
		out.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	out.WriteString(s)
	return []byte(out.String())
}

const cloudTDoc = `{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "us-east-1a",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-0abcdef1234567890",
  "instanceId" : "i-0123456789abcdef0",
  "instanceType" : "t3.micro",
  "kernelId" : null,
  "pendingTime" : "%s",
  "privateIp" : "172.31.1.111",
  "ramdiskId" : null,
  "region" : "us-east-1",
  "version" : "2017-09-30"
}`

// TestAWSIdentity fetches the document and signature through IMDSv2 and
// hands the token to the aws-iid provisioner, which must accept it.
func TestAWSIdentity(t *testing.T) {
	key := cloudTKey(t)
	awsName := pkix.Name{Country: []string{"US"}, Province: []string{"Washington State"}, Locality: []string{"Seattle"},
		Organization: []string{"Amazon Web Services LLC"}}
	cert := cloudTCert(t, &x509.Certificate{Subject: awsName, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * 365 * 24 * time.Hour)},
		nil, key.Public(), key)
	doc := fmt.Appendf(nil, cloudTDoc, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	der := cloudTSign(t, doc, cert, key)
	imds := cloudTNewAWS(t, doc, cloudTBase64Lines(der))

	tok, err := agent.AWSIdentity(context.Background(), imds.URL)
	if err != nil {
		t.Fatalf("AWSIdentity: %v", err)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(tok), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["document"] != base64.StdEncoding.EncodeToString(doc) || got["rsa2048"] != base64.StdEncoding.EncodeToString(der) {
		t.Fatalf("token = %s, want the document and the DER signature, base64", tok)
	}
	imds.mu.Lock()
	if imds.puts != 1 || imds.tokenless != 0 {
		t.Errorf("%d PUTs and %d GETs without a session token, want 1 and 0", imds.puts, imds.tokenless)
	}
	if n, err := strconv.Atoi(imds.ttl); err != nil || n < 1 || n > 21600 {
		t.Errorf("session token TTL %q", imds.ttl)
	}
	imds.mu.Unlock()

	// The CA's side accepts what the agent sends.
	certs := filepath.Join(t.TempDir(), "aws.pem")
	if err := os.WriteFile(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Region": "us-east-1"}, Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := awsiid.ParseConfig([]byte(`{"accounts": ["123456789012"], "certificates_file": "` + certs + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := awsiid.New("aws", cfg, awsiid.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.Attest(context.Background(), tok)
	if err != nil {
		t.Fatalf("the aws-iid provisioner refused the agent's token: %v", err)
	}
	if id.Claims["instance_id"] != "i-0123456789abcdef0" {
		t.Errorf("claims %v", id.Claims)
	}
}

func TestAWSIdentityFails(t *testing.T) {
	doc := fmt.Appendf(nil, cloudTDoc, "2030-01-01T00:00:00Z")
	good := cloudTBase64Lines([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	tests := []struct {
		name    string
		setup   func(s *cloudTAWS)
		url     func(s *cloudTAWS) string
		wantErr string
	}{
		{"IMDS disabled", func(s *cloudTAWS) { s.status = http.StatusForbidden }, nil, "403"},
		{"IMDSv1 only", func(s *cloudTAWS) { s.status = http.StatusNotFound }, nil, "session token"},
		{"empty document", func(s *cloudTAWS) { s.doc = nil }, nil, "document: not a JSON object"},
		{"HTML document", func(s *cloudTAWS) { s.doc = []byte("<html>") }, nil, "document: not a JSON object"},
		{"signature not base64", func(s *cloudTAWS) { s.rsa2048 = []byte("not base64!") }, nil, "rsa2048"},
		{"empty signature", func(s *cloudTAWS) { s.rsa2048 = nil }, nil, "rsa2048"},
		{"document too large", func(s *cloudTAWS) { s.doc = append([]byte("{"), make([]byte, 128<<10)...) }, nil, "larger than"},
		{"bad URL", nil, func(*cloudTAWS) string { return "169.254.169.254" }, "metadata URL"},
		{"URL with a query", nil, func(s *cloudTAWS) string { return s.URL + "?x=1" }, "metadata URL"},
		{"nothing listening", nil, func(s *cloudTAWS) string { u := s.URL; s.Close(); return u }, "session token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cloudTNewAWS(t, doc, good)
			if tt.setup != nil {
				s.mu.Lock()
				tt.setup(s)
				s.mu.Unlock()
			}
			u := s.URL
			if tt.url != nil {
				u = tt.url(s)
			}
			tok, err := agent.AWSIdentity(context.Background(), u)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AWSIdentity = %q, %v; want an error saying %q", tok, err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "agent: aws instance identity: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.tokenless != 0 {
				t.Errorf("%d GETs without a session token (IMDSv1 fallback)", s.tokenless)
			}
		})
	}
}

// cloudTAzure is Azure IMDS's attested-data endpoint: it requires the
// Metadata header and an api-version, as Azure does, and answers
// {"encoding":"pkcs7","signature":...} for the nonce asked.
type cloudTAzure struct {
	*httptest.Server
	sign func(nonce string) []byte // DER PKCS#7 for nonce

	mu     sync.Mutex
	nonces []string
	body   string // if set, the answer instead
	status int
}

func cloudTNewAzure(t *testing.T, sign func(string) []byte) *cloudTAzure {
	s := &cloudTAzure{sign: sign}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		switch {
		case r.Header.Get("Metadata") != "true":
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"Bad request. Required metadata header not specified"}`)
			return
		case r.URL.Path != "/metadata/attested/document" || r.Method != http.MethodGet:
			w.WriteHeader(http.StatusNotFound)
			return
		case r.URL.Query().Get("api-version") == "":
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"Bad request. api-version was not specified in the request"}`)
			return
		case s.status != 0:
			w.WriteHeader(s.status)
			fmt.Fprint(w, `{"error":"Internal error"}`)
			return
		case s.body != "":
			fmt.Fprint(w, s.body)
			return
		}
		nonce := r.URL.Query().Get("nonce")
		s.nonces = append(s.nonces, nonce)
		json.NewEncoder(w).Encode(map[string]string{"encoding": "pkcs7", "signature": base64.StdEncoding.EncodeToString(s.sign(nonce))})
	}))
	t.Cleanup(s.Close)
	return s
}

// TestAzureAttested asks the azure-imds provisioner for a challenge,
// fetches attested data for it and hands the token back, which the
// provisioner must accept.
func TestAzureAttested(t *testing.T) {
	rootKey, interKey, signerKey := cloudTKey(t), cloudTKey(t), cloudTKey(t)
	root := cloudTCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Test TLS RSA Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, rootKey.Public(), rootKey)
	inter := cloudTCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Test TLS RSA CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, root, interKey.Public(), rootKey)
	signer := cloudTCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "metadata.azure.com"}, DNSNames: []string{"metadata.azure.com"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, inter, signerKey.Public(), interKey)
	dir := t.TempDir()
	write := func(name string, c *x509.Certificate) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const sub, vm = "8d10da13-8125-4ba9-a717-bf7490507b3d", "02aab8a4-74ef-476e-8182-f6d2ba4166a6"
	imds := cloudTNewAzure(t, func(nonce string) []byte {
		now := time.Now().UTC()
		doc := fmt.Sprintf(`{"licenseType":"","nonce":%q,"plan":{"name":"","product":"","publisher":""},"sku":"22_04-lts-gen2",`+
			`"subscriptionId":%q,"timeStamp":{"createdOn":%q,"expiresOn":%q},"vmId":%q}`,
			nonce, sub, now.Format("01/02/06 15:04:05 -0000"), now.Add(6*time.Hour).Format("01/02/06 15:04:05 -0000"), vm)
		return cloudTSign(t, []byte(doc), signer, signerKey)
	})
	cfg, err := azureimds.ParseConfig([]byte(`{"subscriptions": ["` + sub + `"], "roots_file": "` + write("roots.pem", root) +
		`", "intermediates_file": "` + write("intermediates.pem", inter) + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := azureimds.New("azure", cfg, azureimds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	nonce, _, err := p.Challenge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := agent.AzureAttested(context.Background(), imds.URL+"/", nonce)
	if err != nil {
		t.Fatalf("AzureAttested: %v", err)
	}
	imds.mu.Lock()
	if len(imds.nonces) != 1 || imds.nonces[0] != nonce {
		t.Errorf("IMDS was asked for nonces %q, want [%q]", imds.nonces, nonce)
	}
	imds.mu.Unlock()
	var got map[string]string
	if err := json.Unmarshal([]byte(tok), &got); err != nil || len(got) != 2 || got["nonce"] != nonce || got["signature"] == "" {
		t.Fatalf("token = %s (%v)", tok, err)
	}
	id, err := p.Attest(context.Background(), tok)
	if err != nil {
		t.Fatalf("the azure-imds provisioner refused the agent's token: %v", err)
	}
	if id.Claims["vm_id"] != vm {
		t.Errorf("claims %v", id.Claims)
	}
}

func TestAzureAttestedFails(t *testing.T) {
	key := cloudTKey(t)
	cert := cloudTCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "metadata.azure.com"}}, nil, key.Public(), key)
	cached := cloudTSign(t, []byte(`{"nonce":"1111111111","vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6"}`), cert, key)
	tests := []struct {
		name, nonce string
		setup       func(s *cloudTAzure)
		url         func(s *cloudTAzure) string
		wantErr     string
	}{
		{"no nonce", "", nil, nil, "no nonce"},
		{"nonce with a space", "12345 67890", nil, nil, "malformed nonce"},
		{"server error", "0123456789", func(s *cloudTAzure) { s.status = http.StatusInternalServerError }, nil, "500"},
		{"not JSON", "0123456789", func(s *cloudTAzure) { s.body = "<html>" }, nil, "invalid character"},
		{"other encoding", "0123456789", func(s *cloudTAzure) { s.body = `{"encoding":"jws","signature":"MAMCAQE="}` }, nil, `encoding "jws"`},
		{"signature not base64", "0123456789", func(s *cloudTAzure) { s.body = `{"encoding":"pkcs7","signature":"!!"}` }, nil, "signature"},
		{"empty signature", "0123456789", func(s *cloudTAzure) { s.body = `{"encoding":"pkcs7","signature":""}` }, nil, "signature"},
		{"not PKCS#7", "0123456789", func(s *cloudTAzure) { s.body = `{"encoding":"pkcs7","signature":"MAMCAQE="}` }, nil, "signature"},
		{"answer for another nonce", "0123456789", nil, nil, `IMDS answered for nonce "1111111111"`},
		{"bad URL", "0123456789", nil, func(*cloudTAzure) string { return "ftp://169.254.169.254" }, "metadata URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cloudTNewAzure(t, func(string) []byte { return cached })
			if tt.setup != nil {
				s.mu.Lock()
				tt.setup(s)
				s.mu.Unlock()
			}
			u := s.URL
			if tt.url != nil {
				u = tt.url(s)
			}
			tok, err := agent.AzureAttested(context.Background(), u, tt.nonce)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("AzureAttested = %q, %v; want an error saying %q", tok, err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "agent: azure attested data: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
}
