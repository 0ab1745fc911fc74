package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
)

// stepCA is a step-ca child process, initialised by `step ca init` in a
// directory of its own, with one JWK provisioner whose key signs the
// one-time tokens of the sign phases.
type stepCA struct {
	db      string // "badgerv2" or "bbolt"
	dir     string
	url     string // https://127.0.0.1:port
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	roots   *x509.CertPool
	jwk     *jose.JSONWebKey
	prov    string
	version string
}

const stepSubject = "bench.local"

// startStepCA initialises step-ca in tmp/step-<db> with `step ca init`
// (non-interactive: the passwords come from a file), switches its
// database to db, gives it the same 5-minute leaf lifetime agentca's
// benchmark uses, and starts it.
func startStepCA(ctx context.Context, stepBin, stepCABin, tmp, db string) (*stepCA, error) {
	s := &stepCA{db: db, dir: filepath.Join(tmp, "step-"+db), prov: "bench"}
	s.logPath = filepath.Join(s.dir, "step-ca.log")
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	pw := filepath.Join(s.dir, "password")
	if err := os.WriteFile(pw, []byte("bench-password\n"), 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.url = "https://" + port
	steppath := filepath.Join(s.dir, "steppath")
	env := append(os.Environ(), "STEPPATH="+steppath, "HOME="+s.dir)
	init := exec.CommandContext(ctx, stepBin, "ca", "init", "--name", "bench", "--dns", "127.0.0.1",
		"--address", port, "--provisioner", s.prov, "--password-file", pw, "--provisioner-password-file", pw,
		"--deployment-type", "standalone")
	init.Env = env
	if out, err := init.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("step ca init: %v: %s", err, tail(string(out), 5))
	}
	cfgPath := filepath.Join(steppath, "config", "ca.json")
	if err := s.configure(cfgPath, pw); err != nil {
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(steppath, "certs", "root_ca.crt"))
	if err != nil {
		return nil, err
	}
	s.roots = x509.NewCertPool()
	if !s.roots.AppendCertsFromPEM(rootPEM) {
		return nil, errors.New("step-ca: root_ca.crt holds no certificate")
	}
	s.version = moduleVersion(stepCABin)
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(stepCABin, "--password-file", pw, cfgPath)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); logf.Close(); close(s.exited) }()
	if err := s.waitHealthy(ctx); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// configure sets the database and the leaf lifetime in ca.json and
// decrypts the JWK provisioner's key.
func (s *stepCA) configure(cfgPath, pwPath string) error {
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("step-ca ca.json: %w", err)
	}
	dbDir := filepath.Join(s.dir, "db")
	switch s.db {
	case "badgerv2":
		cfg["db"] = map[string]any{"type": "badgerv2", "dataSource": dbDir}
	case "bbolt":
		if err := os.MkdirAll(dbDir, 0o700); err != nil {
			return err
		}
		cfg["db"] = map[string]any{"type": "bbolt", "dataSource": filepath.Join(dbDir, "bolt.db")}
	default:
		return fmt.Errorf("step-ca database %q: want badgerv2 or bbolt", s.db)
	}
	auth, _ := cfg["authority"].(map[string]any)
	provs, _ := auth["provisioners"].([]any)
	if len(provs) != 1 {
		return fmt.Errorf("step-ca ca.json: %d provisioners, want the one `step ca init` made", len(provs))
	}
	p, _ := provs[0].(map[string]any)
	p["claims"] = map[string]any{"minTLSCertDuration": "1m", "defaultTLSCertDuration": "5m", "maxTLSCertDuration": "1h"}
	enc, _ := p["encryptedKey"].(string)
	pw, err := os.ReadFile(pwPath)
	if err != nil {
		return err
	}
	s.jwk, err = jose.ParseKey([]byte(enc), jose.WithPassword([]byte(strings.TrimSpace(string(pw)))))
	if err != nil {
		return fmt.Errorf("step-ca provisioner key: %w", err)
	}
	if k, ok := p["key"].(map[string]any); ok && s.jwk.KeyID == "" {
		s.jwk.KeyID, _ = k["kid"].(string)
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(cfgPath, out, 0o600)
}

func (s *stepCA) waitHealthy(ctx context.Context) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("step-ca exited at start: %s", tail(s.logPath, 5))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := httpGetClient(ctx, hc, s.url+"/health"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("step-ca not healthy after 30s: %s", tail(s.logPath, 5))
}

func httpGetClient(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s", resp.Status)
	}
	return resp.StatusCode, nil
}

// moduleVersion is the main module and version a Go binary was built
// from (`go install` records them; step-ca's own version string is only
// set by its release builds).
func moduleVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return bin
	}
	return bi.Main.Path + "@" + bi.Main.Version + ", " + bi.GoVersion
}

func (s *stepCA) cpuSeconds() float64 { return procCPU(s.cmd.Process.Pid) }

func (s *stepCA) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// tokens signs n one-time tokens for stepSubject, as `step ca token`
// does: the JWK provisioner's key, audience the sign endpoint, a random
// jti that step-ca records to refuse a second use.
func (s *stepCA) tokens(n int) ([]string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(s.jwk.Algorithm), Key: s.jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.jwk.KeyID))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]string, n)
	jti := make([]byte, 16)
	for i := range out {
		if _, err := rand.Read(jti); err != nil {
			return nil, err
		}
		claims := jose.Claims{Issuer: s.prov, Subject: stepSubject, Audience: jose.Audience{s.url + "/1.0/sign"},
			NotBefore: jose.NewNumericDate(now.Add(-time.Minute)), IssuedAt: jose.NewNumericDate(now),
			Expiry: jose.NewNumericDate(now.Add(5 * time.Minute)), ID: hex.EncodeToString(jti)}
		out[i], err = jose.Signed(signer).Claims(claims).Claims(map[string]any{"sans": []string{stepSubject}}).CompactSerialize()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stepKey is a key with its CSRs: one step-ca's JWK provisioner accepts
// for stepSubject (the CSR's names must be the token's), one for agentca.
type stepKey struct {
	key      crypto.Signer
	csrPEM   string // names stepSubject
	plainCSR string // names nothing
}

func newStepKeys(n int) ([]stepKey, error) {
	out := make([]stepKey, n)
	for i := range out {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: stepSubject}, DNSNames: []string{stepSubject}}, key)
		if err != nil {
			return nil, err
		}
		plain, err := makeCSR(key)
		if err != nil {
			return nil, err
		}
		out[i] = stepKey{key: key, csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), plainCSR: plain}
	}
	return out, nil
}

// stepSignResponse is step-ca's answer to /1.0/sign, /1.0/renew and
// /1.0/rekey.
type stepSignResponse struct {
	Crt       string   `json:"crt"`
	CertChain []string `json:"certChain"`
}

// certificate parses a step-ca answer and verifies its leaf against the
// root, returning it as a TLS certificate with key.
func (s *stepCA) certificate(b []byte, key crypto.Signer) (*tls.Certificate, error) {
	var r stepSignResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	leaves, err := certPEMBlocks([]byte(r.Crt))
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	tc := &tls.Certificate{Certificate: [][]byte{leaves[0].Raw}, PrivateKey: key, Leaf: leaves[0]}
	for _, c := range r.CertChain[min(1, len(r.CertChain)):] {
		cs, err := certPEMBlocks([]byte(c))
		if err != nil {
			return nil, err
		}
		for _, x := range cs {
			inter.AddCert(x)
			tc.Certificate = append(tc.Certificate, x.Raw)
		}
	}
	if _, err := leaves[0].Verify(x509.VerifyOptions{Roots: s.roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("step-ca leaf does not verify: %w", err)
	}
	if k, ok := leaves[0].PublicKey.(*ecdsa.PublicKey); !ok || !k.Equal(key.Public()) {
		return nil, errors.New("step-ca leaf does not carry the CSR's key")
	}
	return tc, nil
}
