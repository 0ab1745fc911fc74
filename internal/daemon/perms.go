package daemon

// The state directory's permissions, checked at every start as ssh checks
// its keys: a directory another user can write lets them replace the
// admin socket (and capture an operator's join tokens), the keys or the
// configuration.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/agentca/agentca/internal/config"
)

// checkStateDir refuses D, D/keys and D/agentca.json when group or others
// can write them, or when another user (root aside) owns them.
func checkStateDir(dir string) error {
	for _, name := range []string{"", KeysDir, config.FileName} {
		path := filepath.Join(dir, name)
		info, err := os.Stat(path)
		if name == KeysDir && errors.Is(err, os.ErrNotExist) {
			continue // keys in a KMS
		}
		if err != nil {
			return err
		}
		if err := checkOwnerMode(path, info); err != nil {
			return err
		}
	}
	return nil
}

func checkOwnerMode(path string, info os.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): another local user could replace the admin socket, the keys or the configuration; run chmod go-w %s (agentca refuses to start, as ssh does)",
			path, perm, path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(st.Uid) != uid && st.Uid != 0 {
			return fmt.Errorf("%s is owned by uid %d, not by this user (uid %d): run agentca as its owner, or chown it (agentca refuses to start, as ssh does)",
				path, st.Uid, uid)
		}
	}
	return nil
}

// listenAdmin opens the admin socket at path with mode 0600. It is bound
// inside a new 0700 directory, made 0600 there and only then moved to
// path, so no other user can connect in between; the state directory is
// not writable by others (checkStateDir), so nobody can replace it. The
// store's lock is held, so a leftover socket is stale and is removed.
func listenAdmin(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".a")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.Listen("unix", bound)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Rename(bound, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return &adminListener{UnixListener: ul, path: path}, nil
}

// adminListener removes the socket file when closed.
type adminListener struct {
	*net.UnixListener
	path string
}

func (l *adminListener) Close() error {
	err := l.UnixListener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

func (l *adminListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }
