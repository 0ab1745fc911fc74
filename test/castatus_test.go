package test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agentca/agentca/wire"
)

// issuingStatus asks the OCSP responder named in cert (an issuing CA or a
// cross-signed certificate) about it, with root as the issuer.
func issuingStatus(t *testing.T, cert, root *x509.Certificate) (*ocsp.Response, error) {
	t.Helper()
	if len(cert.OCSPServer) != 1 || len(cert.CRLDistributionPoints) != 1 {
		t.Fatalf("%s: OCSP %v, CRL %v; want one each", cert.Subject.CommonName, cert.OCSPServer, cert.CRLDistributionPoints)
	}
	if want := "/crl/" + hex.EncodeToString(root.SubjectKeyId); !strings.HasSuffix(cert.CRLDistributionPoints[0], want) {
		t.Errorf("%s: CRL distribution point %s, want the root's (…%s)", cert.Subject.CommonName, cert.CRLDistributionPoints[0], want)
	}
	req, err := ocsp.CreateRequest(cert, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, &http.Client{Timeout: 10 * time.Second}, http.MethodPost, cert.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if r.status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", cert.OCSPServer[0], r.status, r.body)
	}
	return ocsp.ParseResponseForCert(r.body, cert, root)
}

func wantIssuingGood(t *testing.T, what string, cert, root *x509.Certificate) {
	t.Helper()
	resp, err := issuingStatus(t, cert, root)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if resp.Status != ocsp.Good {
		t.Fatalf("%s: OCSP status %d, want good", what, resp.Status)
	}
	if resp.Certificate == nil || resp.Certificate.CheckSignatureFrom(root) != nil {
		t.Fatalf("%s: the response is not signed by a responder the root issued", what)
	}
}

// TestIssuingCAStatus: the issuing CA made by init names an OCSP responder
// and a CRL; the root answers good for it, and openssl verifies that
// answer. A staged anchor's issuing CA (and the certificate cross-signing
// it under the old root) get the same; once the old anchor is retired,
// its root no longer answers.
func TestIssuingCAStatus(t *testing.T) {
	t.Parallel()
	openssl := requireOpenSSL(t)
	c := newCA(t, caOptions{})
	c.start()
	out := filepath.Join(t.TempDir(), "agent")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), out); r.code != 0 {
		t.Fatal(r)
	}
	cr := readCreds(t, out)
	iss, root := cr.chain[0], c.Roots[0]
	wantIssuingGood(t, "init's issuing CA", iss, root)

	// openssl, as nginx uses it.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "iss.pem"), certPEM(iss))
	cmd := exec.Command(openssl, "ocsp", "-issuer", c.rootsFile(), "-cert", filepath.Join(dir, "iss.pem"), "-url", iss.OCSPServer[0],
		"-CAfile", c.rootsFile(), "-no_nonce")
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "Response verify OK") || !strings.Contains(string(got), ": good") {
		t.Fatalf("openssl ocsp for the issuing CA: %v\n%s", err, got)
	}

	// A new anchor with a new root, cross-signed by the old one.
	mustRun(t, "anchors", "stage", "--dir", c.Dir, "--cross-sign")
	var list []wire.AnchorStatus
	if err := json.Unmarshal([]byte(mustRun(t, "anchors", "list", "--json", "--dir", c.Dir).stdout), &list); err != nil || len(list) != 2 {
		t.Fatalf("anchors list --json: %v %v", err, list)
	}
	oldID, newID := list[0].ID, list[1].ID
	if list[0].State != "active" {
		oldID, newID = newID, oldID
	}
	roots := parseCerts(t, do(t, c.client(nil), http.MethodGet, c.URL+"/v1/roots", "", nil).body)
	if len(roots) != 2 {
		t.Fatalf("/v1/roots: %d roots, want 2", len(roots))
	}
	newRoot := roots[0]
	if newRoot.Equal(root) {
		newRoot = roots[1]
	}
	mustRun(t, "anchors", "activate", "--dir", c.Dir, "--force", newID)
	out2 := filepath.Join(t.TempDir(), "agent2")
	if r := c.enroll(c.token("spiffe://example.org/agent/b"), out2); r.code != 0 {
		t.Fatal(r)
	}
	cr2 := readCreds(t, out2)
	if len(cr2.chain) != 2 {
		t.Fatalf("chain under the new anchor: %d certificates, want the issuing CA and its cross-signed twin", len(cr2.chain))
	}
	iss2, cross := cr2.chain[0], cr2.chain[1]
	wantIssuingGood(t, "the new issuing CA", iss2, newRoot)
	wantIssuingGood(t, "the cross-signed certificate", cross, root)
	wantIssuingGood(t, "the retiring issuing CA", iss, root)

	mustRun(t, "anchors", "retire", "--dir", c.Dir, "--force", oldID)
	eventually(t, 5*time.Second, 100*time.Millisecond, "the retired root to stop answering", func() bool {
		_, err := issuingStatus(t, iss, root)
		var re ocsp.ResponseError
		return errors.As(err, &re) && re.Status == ocsp.Unauthorized
	})
	wantIssuingGood(t, "the new issuing CA after the retirement", iss2, newRoot)
}

// TestIssuingCAStatusOfflineRoot: with the root's key away (kept offline
// by the operator), the CA still starts and issues; only its root's
// answers about the issuing CA are missing (the OCSP "unauthorized"
// status), and the log says why.
func TestIssuingCAStatusOfflineRoot(t *testing.T) {
	t.Parallel()
	c := newCA(t, caOptions{})
	if err := os.Rename(filepath.Join(c.Dir, "keys", "root.key"), filepath.Join(t.TempDir(), "root.key")); err != nil {
		t.Fatal(err)
	}
	c.start()
	out := filepath.Join(t.TempDir(), "agent")
	if r := c.enroll(c.token("spiffe://example.org/agent/a"), out); r.code != 0 {
		t.Fatalf("enroll with the root key offline: %s", r)
	}
	cr := readCreds(t, out)
	_, err := issuingStatus(t, cr.chain[0], c.Roots[0])
	var re ocsp.ResponseError
	if !errors.As(err, &re) || re.Status != ocsp.Unauthorized {
		t.Fatalf("OCSP about the issuing CA with the root key offline: %v, want the unauthorized status", err)
	}
	c.mu.Lock()
	log := c.proc.log()
	c.mu.Unlock()
	if !strings.Contains(log, "cannot run the OCSP responder and CRL of a root") {
		t.Fatalf("the log does not say why the root does not answer:\n%s", log)
	}
}
