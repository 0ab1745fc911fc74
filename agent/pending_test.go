package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentca/agentca/agent"
	"github.com/agentca/agentca/internal/testca"
	"github.com/agentca/agentca/wire"
)

// TestRenewalKeepsKeyAcrossFailedAttempt: a renewal the CA recorded but
// the agent could not install (its certificate file cannot be written) is
// retried with the same key, gets the same certificate back and installs
// it once the file can be written; a new key per attempt would be a
// second renewal onto another key, which revokes the lineage.
func TestRenewalKeepsKeyAcrossFailedAttempt(t *testing.T) {
	ca := testca.Start(t, testca.Options{})
	const id = "spiffe://example.org/agent/pending"
	token := ca.Token(t, id)
	dir := filepath.Join(t.TempDir(), "out")
	src, err := agent.NewSource(context.Background(), agent.Config{CAURL: ca.URL, Roots: ca.Roots, Provisioner: "join",
		Attest: func(context.Context) (string, error) { return token, nil }, Dir: dir,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first := src.Current()
	if _, err := os.Stat(filepath.Join(dir, agent.PendingKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("the pending key outlived the enrollment: %v", err)
	}
	// The certificate file cannot be replaced: every install fails.
	certPath := filepath.Join(dir, agent.CertFile)
	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(certPath, 0o700); err != nil {
		t.Fatal(err)
	}
	children := func() []wire.CertInfo {
		var out wire.CertList
		if st, b := ca.Admin(t, "GET", "/admin/v1/certs?spiffe_id="+id, nil, &out); st != 200 {
			t.Fatalf("list: %d %s", st, b)
		}
		var kids []wire.CertInfo
		for _, c := range out.Certificates {
			if c.Revoked {
				t.Fatalf("%s was revoked: the retry was taken for a second renewal", c.Serial)
			}
			if c.RenewedFrom == first.Serial {
				kids = append(kids, c)
			}
		}
		return kids
	}
	src.RenewNow()
	deadline := time.Now().Add(10 * time.Second)
	for len(children()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the renewal never reached the CA")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let a few attempts fail after the CA recorded the child.
	time.Sleep(600 * time.Millisecond)
	if src.Current().Serial != first.Serial {
		t.Fatal("a certificate was installed although its file could not be written")
	}
	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	for src.Current().Serial == first.Serial {
		if time.Now().After(deadline) || src.Err() != nil {
			t.Fatalf("the renewal never completed (source error: %v)", src.Err())
		}
		time.Sleep(20 * time.Millisecond)
	}
	kids := children()
	if len(kids) != 1 || kids[0].Serial != src.Current().Serial {
		t.Fatalf("the CA holds %d renewals of %s (%v); want one, the one installed (%s)", len(kids), first.Serial, kids, src.Current().Serial)
	}
	if _, err := os.Stat(filepath.Join(dir, agent.PendingKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("the pending key outlived the renewal: %v", err)
	}
	if cr, _, err := agent.LoadFiles(dir); err != nil || cr.Serial != src.Current().Serial {
		t.Fatalf("files hold %v (%v), want the renewed certificate", cr, err)
	}
}

// TestNextKey: the pending key survives until cleared, and one already
// installed is replaced.
func TestNextKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := agent.NextKey(dir, "ec-p256", nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := agent.NextKey(dir, "ec-p256", nil)
	if err != nil || !sameKey(k1, k2) {
		t.Fatalf("a second attempt got another key (%v)", err)
	}
	if info, err := os.Stat(filepath.Join(dir, agent.PendingKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("pending key file: %v, %v; want mode 0600", info, err)
	}
	k3, err := agent.NextKey(dir, "ec-p256", &agent.Credentials{Key: k1})
	if err != nil || sameKey(k1, k3) {
		t.Fatalf("the current key was offered as the next one (%v)", err)
	}
	if err := agent.ClearPendingKey(dir); err != nil {
		t.Fatal(err)
	}
	k4, err := agent.NextKey(dir, "ec-p256", nil)
	if err != nil || sameKey(k3, k4) {
		t.Fatalf("a cleared pending key came back (%v)", err)
	}
}
