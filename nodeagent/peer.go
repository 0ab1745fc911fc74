package nodeagent

// Caller attestation from the kernel: the peer credentials of the unix
// socket, read when the connection is accepted, and a pidfd that pins the
// caller's process.
//
// Pid reuse: a pid names a process only while that process exists. The
// agent holds a pidfd for the caller, taken atomically with the
// credentials (SO_PEERPIDFD, Linux 6.5+) or, on older kernels, opened with
// pidfd_open right after SO_PEERCRED. After reading /proc/<pid> for the
// selectors it checks that the pidfd's process is still alive
// (pidfd_send_signal with signal 0): if it is, the pid was not reused and
// what was read belongs to the caller; if not, the call is refused. On
// kernels without SO_PEERPIDFD a window remains between SO_PEERCRED and
// pidfd_open in which the caller could exit and its pid be reused.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5, asm-generic value).
const soPeerPidfd = 77

// Caller is the process at the other end of a Workload API connection.
type Caller struct {
	PID      int32
	UID, GID uint32
	proc     *pidRef
}

// AuthType implements credentials.AuthInfo.
func (Caller) AuthType() string { return "unix-peer-credentials" }

// Alive reports whether the caller's process still exists (so its pid
// still names it).
func (c Caller) Alive() bool { return c.proc != nil && c.proc.alive() }

// pidRef holds a pidfd until its connection closes.
type pidRef struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

func (p *pidRef) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.fd < 0 {
		return false
	}
	return unix.PidfdSendSignal(p.fd, 0, nil, 0) == nil
}

func (p *pidRef) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed && p.fd >= 0 {
		unix.Close(p.fd)
	}
	p.closed = true
}

// peerConn closes the pidfd with the connection.
type peerConn struct {
	net.Conn
	proc *pidRef
	once sync.Once
}

func (c *peerConn) Close() error {
	c.once.Do(c.proc.close)
	return c.Conn.Close()
}

// peerCredentials are gRPC transport credentials for a unix socket: no
// encryption (the kernel carries the bytes), and the caller's identity
// from the kernel as the connection's AuthInfo (a Caller).
type peerCredentials struct{}

// ErrNotUnix is returned for a connection that is not a unix socket.
var ErrNotUnix = errors.New("nodeagent: not a unix socket connection")

func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, ErrNotUnix
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	pidfd := -1
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			if p, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd); err == nil {
				pidfd = p
			}
		}
	}); err != nil {
		return nil, nil, err
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("nodeagent: SO_PEERCRED: %w", credErr)
	}
	if pidfd < 0 {
		if pidfd, err = unix.PidfdOpen(int(cred.Pid), 0); err != nil {
			return nil, nil, fmt.Errorf("nodeagent: pidfd_open(%d): %w", cred.Pid, err)
		}
	}
	ref := &pidRef{fd: pidfd}
	return &peerConn{Conn: conn, proc: ref}, Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, proc: ref}, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("nodeagent: server-side credentials only")
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peer-credentials"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }
