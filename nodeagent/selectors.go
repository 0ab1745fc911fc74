package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrCallerGone refuses a caller whose process exited during attestation
// (its pid may name another process now).
var ErrCallerGone = errors.New("nodeagent: the calling process exited")

// procRoot is where the process information is read (a variable only so
// the kubelet test can give a process a cgroup file).
var procRoot = "/proc"

// UnixSelectors returns the caller's unix selectors: unix:uid, unix:gid,
// unix:user and unix:group (when the names resolve), unix:path and
// unix:sha256 of its executable (when the agent may read it). A selector
// it cannot establish is left out, which can only make the caller match
// fewer definitions.
func (h *hashCache) UnixSelectors(c Caller) ([]string, error) {
	uid, gid := strconv.FormatUint(uint64(c.UID), 10), strconv.FormatUint(uint64(c.GID), 10)
	sel := []string{"unix:uid:" + uid, "unix:gid:" + gid}
	if name := h.name("u", uid); name != "" {
		sel = append(sel, "unix:user:"+name)
	}
	if name := h.name("g", gid); name != "" {
		sel = append(sel, "unix:group:"+name)
	}
	exe := fmt.Sprintf("%s/%d/exe", procRoot, c.PID)
	if path, err := os.Readlink(exe); err == nil {
		sel = append(sel, "unix:path:"+path)
		if sum, err := h.sum(exe); err == nil {
			sel = append(sel, "unix:sha256:"+sum)
		}
	}
	// Everything above was read through the pid: it is the caller's only
	// if the caller still exists now.
	if !c.Alive() {
		return nil, ErrCallerGone
	}
	return sel, nil
}

// hashCache remembers executables' SHA-256 by file identity (device,
// inode, size, modification and change times), so a caller's binary is
// hashed once, and user and group names for nameTTL.
type hashCache struct {
	mu    sync.Mutex
	m     map[fileID]string
	names map[string]cachedName
}

type cachedName struct {
	name string
	at   time.Time
}

// nameTTL is how long a user or group name is reused.
const nameTTL = 10 * time.Second

// name returns the name of user ("u") or group ("g") id, or "" when it
// has none.
func (h *hashCache) name(kind, id string) string {
	key := kind + id
	h.mu.Lock()
	c, ok := h.names[key]
	h.mu.Unlock()
	if ok && time.Since(c.at) < nameTTL {
		return c.name
	}
	name := ""
	if kind == "u" {
		if u, err := user.LookupId(id); err == nil {
			name = u.Username
		}
	} else if g, err := user.LookupGroupId(id); err == nil {
		name = g.Name
	}
	h.mu.Lock()
	if h.names == nil || len(h.names) > 4096 {
		h.names = map[string]cachedName{}
	}
	h.names[key] = cachedName{name: name, at: time.Now()}
	h.mu.Unlock()
	return name
}

type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func (h *hashCache) sum(path string) (string, error) {
	// A stat through the link names the same file an open would: when
	// that version was hashed already, one system call is enough.
	if fi, err := os.Stat(path); err == nil {
		if id, ok := fileIDOf(fi); ok {
			h.mu.Lock()
			s, ok := h.m[id]
			h.mu.Unlock()
			if ok {
				return s, nil
			}
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	id, ok := fileIDOf(fi)
	if !ok {
		return "", errors.New("nodeagent: no file identity")
	}
	h.mu.Lock()
	s, ok := h.m[id]
	h.mu.Unlock()
	if ok {
		return s, nil
	}
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", err
	}
	s = hex.EncodeToString(d.Sum(nil))
	h.mu.Lock()
	if h.m == nil || len(h.m) > 4096 {
		h.m = map[fileID]string{}
	}
	h.m[id] = s
	h.mu.Unlock()
	return s, nil
}

// fileIDOf is the identity of a file version: device, inode, size,
// modification time, and change time (which a write or a utimes call
// moves, and which no one but the kernel sets: a binary rewritten in place
// with its size and mtime restored is hashed again).
func fileIDOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano(),
		ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec}, true
}
