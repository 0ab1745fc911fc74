package test

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kmsSoftHSMModule is where Debian's softhsm2 package puts the PKCS#11
// module.
const kmsSoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// kmsInit runs agentca init with extra flags in a new temporary directory,
// like newCA, and returns the CA (not started).
func kmsInit(t *testing.T, extra ...string) *testCA {
	t.Helper()
	base := t.TempDir()
	c := &testCA{t: t, base: base, Dir: filepath.Join(base, "ca"), HTTPS: freeAddr(t), HTTP: freeAddr(t), TrustDomain: "example.org"}
	c.URL = "https://" + c.HTTPS
	args := append([]string{"init", "--dir", c.Dir, "--trust-domain", c.TrustDomain, "--https", c.HTTPS, "--http", c.HTTP}, extra...)
	r := mustRun(t, args...)
	m := fingerprintLine.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("init did not print the root fingerprint:\n%s", r)
	}
	c.Fingerprint = m[1]
	var err error
	if c.RootsPEM, err = os.ReadFile(c.rootsFile()); err != nil {
		t.Fatal(err)
	}
	c.Roots = parseCerts(t, c.RootsPEM)
	return c
}

// kmsServe starts agentca serve with extra flags and waits for /health.
func kmsServe(t *testing.T, c *testCA, extra ...string) *proc {
	t.Helper()
	logPath := filepath.Join(c.base, fmt.Sprintf("serve-kms-%d.log", time.Now().UnixNano()))
	p := startProc(t, "agentca serve", logPath, append([]string{"serve", "--dir", c.Dir}, extra...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agentca serve stderr (%s):\n%s", logPath, p.log())
		}
	})
	hc := c.client(nil)
	hc.Timeout = 2 * time.Second
	defer hc.CloseIdleConnections()
	eventually(t, 30*time.Second, 50*time.Millisecond, "agentca serve to answer /health", func() bool {
		if p.exited() {
			t.Fatalf("agentca serve exited early (%v):\n%s", p.err, p.log())
		}
		resp, err := hc.Get(c.URL + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	return p
}

// kmsWorks enrolls an agent, checks its certificate with agentca ocsp and
// the log's tree head with agentca log sth: issuance, OCSP and log
// signing all use the CA's keys.
func kmsWorks(t *testing.T, c *testCA) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "creds")
	if r := c.enroll(c.token("spiffe://example.org/agent/kms"), out); r.code != 0 {
		t.Fatalf("enroll: %s", r)
	}
	cr := readCreds(t, out)
	verifyLeaf(t, cr.leaf, cr.chain, c.pool())
	if r := mustRun(t, "ocsp", "--cert", filepath.Join(out, "cert.pem")); r.stdout != "good\n" {
		t.Errorf("ocsp: want good:\n%s", r)
	}
	eventually(t, 20*time.Second, 100*time.Millisecond, "a signed tree head covering the enrollment", func() bool {
		r := mustRun(t, "log", "sth", "--ca", "http://"+c.HTTP, "--log-key", filepath.Join(c.Dir, "log.pub.pem"))
		return strings.Contains(r.stdout, "signature  verified") && !strings.Contains(r.stdout, "tree_size  0\n")
	})
}

// kmsNoKeyFiles fails when any file under dir holds a private key.
func kmsNoKeyFiles(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".key") || strings.Contains(string(b), "PRIVATE KEY") {
			t.Errorf("%s holds a private key; the CA keys should be in the token only", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kmsRequireSoftHSM returns softhsm2-util's path. It fails when softhsm2
// is missing under CI (make deps installs it) and skips only outside CI
// when it cannot be installed.
func kmsRequireSoftHSM(t *testing.T) string {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if err == nil {
		if _, err = os.Stat(kmsSoftHSMModule); err == nil {
			return util
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("the PKCS#11 test needs SoftHSM2 (make deps installs the softhsm2 package): %v", err)
	}
	if _, aerr := exec.LookPath("apt-get"); aerr == nil {
		t.Fatalf("the PKCS#11 test needs SoftHSM2; run make deps (apt-get install softhsm2): %v", err)
	}
	t.Skipf("SoftHSM2 is not installed and apt-get is not available to install it (%v); not under CI, skipping", err)
	return ""
}

// kmsSoftHSMToken makes a SoftHSM2 token labelled agentca, PIN 1234, in a
// temporary directory, and points SOFTHSM2_CONF (inherited by the
// commands the test runs) at it.
func kmsSoftHSMToken(t *testing.T) {
	t.Helper()
	util := kmsRequireSoftHSM(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	writeFile(t, conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"))
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", "agentca", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
}

func TestKMSPKCS11SoftHSM(t *testing.T) {
	kmsSoftHSMToken(t)
	kmsURI := "pkcs11:module-path=" + kmsSoftHSMModule + ";token=agentca?pin-value=1234"
	c := kmsInit(t, "--kms", kmsURI)

	// agentca.json says where each key is: in the token.
	b, err := os.ReadFile(filepath.Join(c.Dir, "agentca.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Keys map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Keys["kms"] != kmsURI {
		t.Errorf("keys.kms = %q, want %q", cfg.Keys["kms"], kmsURI)
	}
	for _, role := range []string{"root", "issuing", "ocsp", "log"} {
		if !strings.HasPrefix(cfg.Keys[role], "pkcs11:id=") || !strings.Contains(cfg.Keys[role], "object=agentca-"+role+"-") {
			t.Errorf("keys.%s = %q, want a pkcs11: key URI", role, cfg.Keys[role])
		}
	}
	kmsNoKeyFiles(t, c.Dir)

	c.start()
	kmsWorks(t, c)
	// A rotation creates the new anchor's keys in the token too.
	kmsRotate(t, c)
	c.stop()
	// The daemon created no key file either (the OCSP and log keys of an
	// old CA are created as files when missing; not these).
	kmsNoKeyFiles(t, c.Dir)

	// A second CA on the same token gets keys of its own.
	c2 := kmsInit(t, "--kms", kmsURI)
	if c2.Fingerprint == c.Fingerprint {
		t.Error("two CAs on one token share a root")
	}
	c2.start()
	kmsWorks(t, c2)
}

func TestKMSInitRefusals(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, []byte("secret\n"))
	for name, args := range map[string][]string{
		"not a KMS URI":        {"--kms", "awskms:key-id=1"},
		"password and KMS":     {"--kms", "pkcs11:token=agentca?pin-value=1", "--password-file", pw},
		"no such module":       {"--kms", "pkcs11:module-path=/nonexistent/module.so;token=agentca?pin-value=1"},
		"ed25519 not in a KMS": {"--kms", "pkcs11:token=agentca?pin-value=1", "--key-type", "ed25519"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, append([]string{"init", "--dir", dir, "--trust-domain", "example.org"}, args...)...)
			if r.code == 0 {
				t.Fatalf("want failure:\n%s", r)
			}
			oneLine(t, r)
			if strings.Contains(r.stderr, "pin-value=1") {
				t.Errorf("the PIN is in the error message:\n%s", r)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("a failed init left %s behind", dir)
			}
		})
	}
}

func TestKeyPasswordE2E(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pw, []byte("correct horse\n"))
	wrong := filepath.Join(t.TempDir(), "wrong")
	writeFile(t, wrong, []byte("battery staple\n"))
	c := kmsInit(t, "--password-file", pw)
	for _, name := range []string{"root.key", "issuing.key", "ocsp.key", "log.key", "jwt.key"} {
		b, err := os.ReadFile(filepath.Join(c.Dir, "keys", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ENCRYPTED PRIVATE KEY") {
			t.Errorf("keys/%s is not encrypted:\n%s", name, b)
		}
	}
	for name, args := range map[string][]string{
		"no password":    nil,
		"wrong password": {"--password-file", wrong},
	} {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, append([]string{"serve", "--dir", c.Dir}, args...)...)
			if r.code != 1 {
				t.Fatalf("want exit 1:\n%s", r)
			}
			oneLine(t, r)
			if !strings.Contains(r.stderr, "password") || !strings.Contains(r.stderr, filepath.Join(c.Dir, "keys")+"/") {
				t.Errorf("want an error naming the key and the password:\n%s", r)
			}
		})
	}
	p := kmsServe(t, c, "--password-file", pw)
	kmsWorks(t, c)
	// The keys of a staged anchor are encrypted with the same password.
	kmsRotate(t, c)
	keys, err := filepath.Glob(filepath.Join(c.Dir, "keys", "anchors", "*.key"))
	if err != nil || len(keys) != 3 { // root, issuing CA, JWT-SVID
		t.Fatalf("keys of the staged anchor: %v %v", keys, err)
	}
	for _, k := range keys {
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(k)
		if !strings.Contains(string(b), "ENCRYPTED PRIVATE KEY") || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: not an encrypted 0600 key (%v)", k, fi.Mode())
		}
	}
	p.stop(t)
}

func TestKeyPermissionsE2E(t *testing.T) {
	c := kmsInit(t)
	for _, name := range []string{"issuing.key", "ocsp.key", "log.key"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(c.Dir, "keys", name)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(path, 0o600)
			r := runCLI(t, "serve", "--dir", c.Dir)
			if r.code != 1 {
				t.Fatalf("want exit 1:\n%s", r)
			}
			oneLine(t, r)
			if !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "0644") {
				t.Errorf("want an error naming %s and its mode:\n%s", path, r)
			}
		})
	}
	c.start()
	kmsWorks(t, c)
}

// kmsRotate stages a new anchor through the CLI, activates it by force
// (the test does not wait a leaf lifetime) and checks that issuance, OCSP
// and the log work under it.
func kmsRotate(t *testing.T, c *testCA) {
	t.Helper()
	r := mustRun(t, "anchors", "stage", "--dir", c.Dir)
	if !strings.Contains(r.stdout, "staged") {
		t.Fatalf("anchors stage:\n%s", r)
	}
	var list []struct {
		ID, State string
	}
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", c.Dir).stdout), &list); err != nil || len(list) != 2 {
		t.Fatalf("anchors list --json: %v %+v", err, list)
	}
	id := list[1].ID
	if list[1].State != "staged" {
		t.Fatalf("second anchor %+v", list[1])
	}
	r = runCLI(t, "anchors", "activate", "--dir", c.Dir, id)
	if r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("activate right after stage: want exit 1 asking for --force:\n%s", r)
	}
	oneLine(t, r)
	// The agents of this test trust every published root.
	resp := do(t, c.client(nil), http.MethodGet, c.URL+"/v1/roots", "", nil)
	if got := parseCerts(t, resp.body); len(got) != 2 {
		t.Fatalf("/v1/roots lists %d roots after stage, want 2", len(got))
	}
	c.Roots, c.RootsPEM = parseCerts(t, resp.body), resp.body
	writeFile(t, c.rootsFile(), resp.body)
	mustRun(t, "anchors", "activate", "--force", "--dir", c.Dir, id)
	kmsWorks(t, c)
}
