package test

// The store is never silently replaced, rolled back or crashed on
// (docs/operations.md): a missing, empty, foreign, rolled-back, truncated
// or corrupted store is refused with one line; a backup of a running CA
// restores to a working CA; the state directory's permissions are checked.

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
)

// refused runs args and wants exit 1, one line on stderr containing want,
// and no panic or goroutine dump.
func refused(t *testing.T, want string, args ...string) result {
	t.Helper()
	r := runCLI(t, args...)
	if r.code != 1 {
		t.Fatalf("want exit 1:\n%s", r)
	}
	oneLine(t, r)
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r)
	}
	for _, bad := range []string{"panic", "goroutine"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("stderr holds %q:\n%s", bad, r)
		}
	}
	return r
}

// storeCA is a CA that issued two certificates and revoked the first
// (keyCompromise), stopped. It returns the revoked serial.
func storeCA(t *testing.T) (*testCA, string) {
	t.Helper()
	ca := newCA(t, caOptions{})
	ca.start()
	hc := ca.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	toks := logE2ETokens(t, ca, "spiffe://example.org/agent/store", 2)
	a := etcdSign(t, hc, ca, toks[0])
	etcdSign(t, hc, ca, toks[1])
	serial := a.leaf.SerialNumber.Text(16)
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", serial, "--reason", "keyCompromise")
	return ca, serial
}

// wantRevoked starts ca and checks that serial is listed as revoked.
func wantRevoked(t *testing.T, ca *testCA, serial string) {
	t.Helper()
	ca.start()
	defer ca.stop()
	for _, c := range ca.certs("spiffe://example.org/agent/store") {
		if normSerial(t, c.Serial) == normSerial(t, serial) {
			if !c.Revoked {
				t.Fatalf("certificate %s is no longer revoked", serial)
			}
			return
		}
	}
	t.Fatalf("certificate %s is gone", serial)
}

// TestStoreMissingEmptyForeign: serve, log audit and store check refuse a
// deleted, an empty and another CA's bbolt file with one line, and create
// nothing; the revoked certificate is revoked when the file comes back.
func TestStoreMissingEmptyForeign(t *testing.T) {
	ca, serial := storeCA(t)
	ca.stop()
	db := filepath.Join(ca.Dir, "agentca.db")
	saved := filepath.Join(ca.base, "saved.db")
	if err := os.Rename(db, saved); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"serve"}, {"log", "audit"}, {"store", "check"}} {
		refused(t, "does not exist", append(cmd, "--dir", ca.Dir)...)
		if _, err := os.Stat(db); err == nil {
			t.Fatalf("%v created a new store", cmd)
		}
	}
	writeFile(t, db, nil)
	for _, cmd := range [][]string{{"serve"}, {"log", "audit"}, {"store", "check"}} {
		refused(t, "is empty", append(cmd, "--dir", ca.Dir)...)
		if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
			t.Fatalf("%v changed the empty file (%v)", cmd, err)
		}
	}
	other := newCA(t, caOptions{})
	b, err := os.ReadFile(filepath.Join(other.Dir, "agentca.db"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, db, b)
	for _, cmd := range [][]string{{"serve"}, {"log", "audit"}, {"store", "check"}} {
		refused(t, "belongs to another CA", append(cmd, "--dir", ca.Dir)...)
	}
	if err := os.Rename(saved, db); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "store", "check", "--dir", ca.Dir)
	wantRevoked(t, ca, serial)
}

// TestStoreRollback: a backup restored after the CA issued more is
// refused (the log is smaller than the tree head in D/sth.json), also on
// a later try, and so is one restored after a later revocation (D/last-
// revocation.json); --accept-rollback starts and writes an audit line. A
// backup taken as the last thing restores without the flag, to a CA that
// issues, with the revocations kept.
func TestStoreRollback(t *testing.T) {
	ca, serial := storeCA(t)
	old := filepath.Join(ca.base, "old.db")
	res := mustRun(t, "backup", "--dir", ca.Dir, "--out", old)
	if !strings.Contains(res.stdout, "Backed up") {
		t.Fatalf("backup output: %s", res)
	}
	hc := ca.client(nil)
	hc.Timeout = 15 * time.Second
	defer hc.CloseIdleConnections()
	later := etcdSign(t, hc, ca, ca.token("spiffe://example.org/agent/store")).leaf.SerialNumber.Text(16)
	beforeRevoke := filepath.Join(ca.base, "before-revoke.db")
	mustRun(t, "backup", "--dir", ca.Dir, "--out", beforeRevoke)
	mustRun(t, "revoke", "--dir", ca.Dir, "--serial", later, "--reason", "keyCompromise")
	latest := filepath.Join(ca.base, "latest.db")
	mustRun(t, "backup", "--dir", ca.Dir, "--out", latest)
	ca.stop()
	db := filepath.Join(ca.Dir, "agentca.db")
	copyFile(t, old, db)
	for range 2 {
		refused(t, "was rolled back", "serve", "--dir", ca.Dir)
	}
	r := refused(t, "--accept-rollback", "serve", "--dir", ca.Dir)
	if !strings.Contains(r.stderr, "sth.json") {
		t.Errorf("the refusal does not name the file it compared with:\n%s", r)
	}
	refused(t, "rolled back", "store", "check", "--dir", ca.Dir)
	// The same log, one revocation less.
	copyFile(t, beforeRevoke, db)
	refused(t, "lost a revocation", "serve", "--dir", ca.Dir)
	refused(t, "lost a revocation", "store", "check", "--dir", ca.Dir)

	// The latest backup, through store restore (the file it replaces is
	// kept): sound, served without the flag, revocations kept.
	res = mustRun(t, "store", "restore", "--dir", ca.Dir, "--from", latest)
	if !strings.Contains(res.stdout, "kept as") {
		t.Errorf("store restore output: %s", res)
	}
	mustRun(t, "store", "check", "--dir", ca.Dir)
	wantRevoked(t, ca, serial)
	wantRevoked(t, ca, later)
	ca.start()
	etcdSign(t, hc, ca, ca.token("spiffe://example.org/agent/after-restore"))
	ca.stop()

	// The old one again, accepted: an audit line, and the CA serves.
	copyFile(t, old, db)
	p := startProc(t, "agentca serve", filepath.Join(ca.base, "accept.log"), "serve", "--dir", ca.Dir, "--accept-rollback")
	eventually(t, 30*time.Second, 50*time.Millisecond, "the accepting start to serve", func() bool {
		return strings.Contains(p.log(), "msg=serving") || p.exited()
	})
	if !strings.Contains(p.log(), "accept_rollback") {
		t.Fatalf("no audit line for the accepted rollback:\n%s", p.log())
	}
	p.stop(t)
	// The accepted state is the new reference: a plain start works.
	ca.start()
	ca.stop()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStoreDamaged: a truncated and a corrupted bbolt file give one line
// naming the file, never a panic, for serve, log audit and store check.
func TestStoreDamaged(t *testing.T) {
	ca, _ := storeCA(t)
	// Cut short under the running daemon: a request that reads it gets
	// 503 and an ERROR line, the daemon stays up and stops cleanly.
	if err := os.Truncate(filepath.Join(ca.Dir, "agentca.db"), 8192); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "certs", "list", "--dir", ca.Dir)
	if r.code != 1 || !strings.Contains(r.stderr, "unavailable") {
		t.Fatalf("certs list on a damaged store: %s", r)
	}
	oneLine(t, r)
	hc := ca.client(nil)
	if resp := do(t, hc, http.MethodGet, ca.URL+"/health", "", nil); resp.status != http.StatusOK {
		t.Fatalf("health after the damage: %d", resp.status)
	}
	hc.CloseIdleConnections()
	ca.stop()
	log := ca.proc.log()
	if !strings.Contains(log, "the store is damaged") || strings.Contains(log, "panic") || strings.Contains(log, "goroutine") {
		t.Fatalf("daemon log after a damaged read:\n%s", log)
	}
	// Stopped files: a fresh CA, cut and corrupted.
	ca, _ = storeCA(t)
	ca.stop()
	db := filepath.Join(ca.Dir, "agentca.db")
	good, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(good) < 6*page {
		t.Fatalf("the file is only %d bytes", len(good))
	}
	cases := map[string][]byte{
		"truncated": good[:len(good)/2+100],
	}
	// Every page after the two meta pages overwritten.
	bad := bytes.Clone(good)
	if _, err := rand.Read(bad[2*page:]); err != nil {
		t.Fatal(err)
	}
	cases["corrupted"] = bad
	for name, data := range cases {
		writeFile(t, db, data)
		for _, cmd := range [][]string{{"serve"}, {"log", "audit"}, {"store", "check"}} {
			r := refused(t, db, append(cmd, "--dir", ca.Dir)...)
			if !strings.Contains(r.stderr, "damaged") && !strings.Contains(r.stderr, "problem") {
				t.Errorf("%s, %v: %s", name, cmd, r)
			}
		}
	}
}

// TestStateDirPermissions: serve refuses a state directory or an
// agentca.json that others can write, and a second local user can neither
// connect to the admin socket nor replace it.
func TestStateDirPermissions(t *testing.T) {
	ca := newCA(t, caOptions{})
	if fi, err := os.Stat(ca.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("init made the state directory %v (%v), want 0700", fi.Mode(), err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
		back os.FileMode
	}{{ca.Dir, 0o777, 0o700}, {filepath.Join(ca.Dir, "keys"), 0o770, 0o700}, {filepath.Join(ca.Dir, "agentca.json"), 0o666, 0o600}} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
		refused(t, "writable by group or others", "serve", "--dir", ca.Dir)
		if err := os.Chmod(c.path, c.back); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("a second local user needs root to create")
	}
	uid, gid := otherUser(t)
	// Others may enter the directory (0711) but not write it.
	if err := os.Chmod(ca.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	// The path to it too (t.TempDir makes 0700 directories).
	for _, d := range []string{ca.base, filepath.Dir(ca.base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca.start()
	defer ca.stop()
	sock := filepath.Join(ca.Dir, "admin.sock")
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin.sock: %v (%v), want a 0600 socket", fi.Mode(), err)
	}
	// As the other user: connect (agentca token create, from a copy of
	// the binary the user can run), then replace the socket.
	bin := filepath.Join(ca.base, "agentca-other")
	copyFile(t, agentcaBin, bin)
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	asOther := func(name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.Env = childEnv()
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := asOther(bin, "token", "create", "--dir", ca.Dir, "--spiffe-id", "spiffe://example.org/stolen")
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("the other user's token create: %v\n%s", err, out)
	}
	script := `rm -f "$1" 2>/dev/null && echo REMOVED
mv "$1" "$1.x" 2>/dev/null && echo MOVED
touch "$1.new" 2>/dev/null && echo CREATED
true`
	out, err = asOther("/bin/sh", "-c", script, "sh", sock)
	if err != nil {
		t.Fatalf("running as uid %d: %v\n%s", uid, err, out)
	}
	for _, bad := range []string{"REMOVED", "MOVED", "CREATED"} {
		if strings.Contains(out, bad) {
			t.Fatalf("the other user %s the admin socket:\n%s", bad, out)
		}
	}
	// The owner still gets in.
	if _, err := os.Lstat(sock); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("the owner cannot connect: %v", err)
	}
	conn.Close()
	ca.token("spiffe://example.org/owner")
}

// otherUser returns the uid and gid of a second local user, created for
// the test.
func otherUser(t *testing.T) (uint32, uint32) {
	t.Helper()
	name := "agentcatest"
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
			if _, lerr := user.Lookup(name); lerr != nil { // a parallel test made it
				t.Fatalf("useradd: %v\n%s", err, out)
			}
		} else {
			t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid)
}

// unbind makes dir's CA look as before the store binding: no D/store-id,
// no identity in the bbolt file.
func unbind(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, "store-id")); err != nil {
		t.Fatal(err)
	}
	logE2EEditDB(t, dir, func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("store_id")) })
}

// TestStoreBindingUpgrade: a state directory from before the binding is
// bound at its next serve when its store holds this CA's root; another
// CA's store (from before the binding too) is refused.
func TestStoreBindingUpgrade(t *testing.T) {
	ca, serial := storeCA(t)
	ca.stop()
	other := newCA(t, caOptions{})
	other.start()
	other.stop()
	unbind(t, ca.Dir)
	unbind(t, other.Dir)
	theirs, err := os.ReadFile(filepath.Join(other.Dir, "agentca.db"))
	if err != nil {
		t.Fatal(err)
	}
	ours := filepath.Join(ca.base, "ours.db")
	copyFile(t, filepath.Join(ca.Dir, "agentca.db"), ours)
	writeFile(t, filepath.Join(ca.Dir, "agentca.db"), theirs)
	refused(t, "another CA's trust anchors", "serve", "--dir", ca.Dir)
	copyFile(t, ours, filepath.Join(ca.Dir, "agentca.db"))
	wantRevoked(t, ca, serial)
	if !strings.Contains(ca.proc.log(), "bound the state directory to its store") {
		t.Fatalf("no log line for the binding:\n%s", ca.proc.log())
	}
	id, err := os.ReadFile(filepath.Join(ca.Dir, "store-id"))
	if err != nil || len(strings.TrimSpace(string(id))) != 32 {
		t.Fatalf("store-id after the upgrade: %q, %v", id, err)
	}
	// Bound now: their store is refused as another CA's.
	writeFile(t, filepath.Join(ca.Dir, "agentca.db"), theirs)
	refused(t, "no store identity", "serve", "--dir", ca.Dir)
}
