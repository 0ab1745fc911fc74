package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestHelperDial is not a test: run as a child process, it connects to
// $NODEAGENT_HELPER_SOCK, waits for one byte and exits.
func TestHelperDial(t *testing.T) {
	sock := os.Getenv("NODEAGENT_HELPER_SOCK")
	if sock == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		os.Exit(2)
	}
	b := make([]byte, 1)
	_, _ = c.Read(b)
	os.Exit(0)
}

// TestCallerAttestation: a real process connects; its selectors come from
// the kernel and /proc, and once it has exited (its pid free for reuse)
// it is refused instead of attested from whatever now has its pid.
func TestCallerAttestation(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self, "-test.run=^TestHelperDial$")
	child.Env = append(os.Environ(), "NODEAGENT_HELPER_SOCK="+sock)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	wrapped, info, err := peerCredentials{}.ServerHandshake(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer wrapped.Close()
	c := info.(Caller)
	if int(c.PID) != child.Process.Pid || int(c.UID) != os.Getuid() || int(c.GID) != os.Getgid() {
		t.Fatalf("caller %+v, want pid %d uid %d", c, child.Process.Pid, os.Getuid())
	}
	var h hashCache
	sel, err := h.UnixSelectors(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	for _, want := range []string{"unix:uid:" + strconv.Itoa(os.Getuid()), "unix:gid:" + strconv.Itoa(os.Getgid()),
		"unix:path:" + self, "unix:sha256:" + hex.EncodeToString(sum[:])} {
		if !slices.Contains(sel, want) {
			t.Errorf("selectors %v lack %s", sel, want)
		}
	}
	// Let the child exit; its pid may now name another process.
	if _, err := wrapped.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := child.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if c.Alive() {
		t.Fatal("an exited caller is alive")
	}
	if _, err := h.UnixSelectors(c); !errors.Is(err, ErrCallerGone) {
		t.Fatalf("selectors of an exited caller: err %v, want ErrCallerGone", err)
	}
}
