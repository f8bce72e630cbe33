// Package sweeper removes what a kernel forwarder of the node left once the nsmgr knows it is
// gone for good (sdk's registry/common/forwardergone): the forwarder's interfaces, tunnels, tc
// filters and policy rules in its network namespace, and its socket files
// (sdk-kernel's sweep.Forwarder).
//
// Why here: only the nsmgr outlives its forwarders on a node and hears of their death, and where
// a forwarder lived can be learned only while it lives. So Watch, at each registration, connects
// to the forwarder through the socket it passed (a descriptor of its socket file, as
// registry/common/sendfd sends it: the listening socket itself never leaves the forwarder, so
// SIOCGSKNS cannot be asked of it) and asks the kernel who listens there (SO_PEERCRED): the
// namespace of that process is the forwarder's, kept open until the registration ends, and the
// address it listens on (getpeername) is its socket file.
//
// What callers rely on:
//   - Nothing is swept under a live forwarder: a namespace where another registered forwarder
//     lives (a successor pod of a DaemonSet shares the node's namespace and adopts the vWires)
//     is left as it is, and a socket file is removed only when it is still the very file the
//     forwarder passed and nothing listens on it.
//   - A forwarder that registered by path, or whose process the nsmgr cannot see (another PID
//     namespace), is not swept; a line says why (DEBUG, WARN). A sweep the nsmgr has no
//     privilege for (CAP_SYS_ADMIN to enter the namespace, CAP_NET_ADMIN in it) fails with a
//     WARN naming them; the nsmgr goes on.
//   - What was removed is logged at INFO.
package sweeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/sweep"
	"vwire.dev/sdk/pkg/registry/common/forwardergone"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/log"
)

// dialTimeout bounds the connection Watch makes to a registering forwarder's socket.
const dialTimeout = time.Second

// Sweeper follows the forwarders of the node. Its Watch is the nsmgr's forwardergone.Watch.
type Sweeper struct {
	mu   sync.Mutex
	live map[*Home]struct{} // homes of registered forwarders
}

// New returns a sweeper that follows no forwarder yet.
func New() *Sweeper { return &Sweeper{live: map[*Home]struct{}{}} }

// Home is where a forwarder lives.
type Home struct {
	NS     netns.NsHandle // its network namespace, open until Close
	Socket string         // the path its socket is bound to, "" when it has none
	inode  string         // the inode URL of the socket file it passed

	sweeper *Sweeper
	name    string
}

// Locate finds where the forwarder that listens on the socket file socket lives: it connects
// through the descriptor and asks the kernel for the listening process and its address. The
// forwarder must be alive; the caller closes the Home.
func Locate(socket *os.File) (*Home, error) {
	inode, err := fdpass.URLOf(socket)
	if err != nil {
		return nil, err
	}
	raw, err := socket.SyscallConn()
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	var dialErr error
	err = raw.Control(func(fd uintptr) {
		// The descriptor's entry in /proc reaches the very socket file, whatever its path.
		conn, dialErr = net.DialTimeout("unix", fmt.Sprintf("/proc/self/fd/%d", fd), dialTimeout)
	})
	if err = errors.Join(err, dialErr); err != nil {
		return nil, fmt.Errorf("sweeper: connect to the forwarder's socket %s: %w", inode, err)
	}
	defer func() { _ = conn.Close() }()
	rc, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var peer unix.Sockaddr
	var credErr, peerErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		peer, peerErr = unix.Getpeername(int(fd))
	}); err != nil {
		return nil, err
	}
	if err := errors.Join(credErr, peerErr); err != nil {
		return nil, fmt.Errorf("sweeper: who listens on %s: %w", inode, err)
	}
	if cred.Pid == 0 {
		return nil, fmt.Errorf("sweeper: the process listening on %s is not in this PID namespace; run the nsmgr with the node's (hostPID)", inode)
	}
	ns, err := netns.GetFromPid(int(cred.Pid))
	if err != nil {
		return nil, fmt.Errorf("sweeper: the network namespace of process %d, listening on %s: %w", cred.Pid, inode, err)
	}
	h := &Home{NS: ns, inode: inode}
	if sa, ok := peer.(*unix.SockaddrUnix); ok && filepath.IsAbs(sa.Name) {
		h.Socket = sa.Name
	}
	return h, nil
}

// Close closes the namespace and forgets the forwarder.
func (h *Home) Close() {
	if s := h.sweeper; s != nil {
		s.mu.Lock()
		delete(s.live, h)
		s.mu.Unlock()
	}
	_ = h.NS.Close()
}

// Watch locates a forwarder that registers (see forwardergone.Watch) and follows it.
func (s *Sweeper) Watch(ctx context.Context, fwd *registry.NetworkServiceEndpoint, socket *os.File) forwardergone.Watched {
	logger := log.FromContext(ctx).With("forwarder", fwd.GetName())
	if socket == nil {
		logger.Debug("sweeper: the forwarder registered by path, not with its socket passed: what it leaves is not swept when it is gone", "url", fwd.GetUrl())
		return nil
	}
	h, err := Locate(socket)
	if err != nil {
		logger.Warn("sweeper: where the forwarder lives is unknown: what it leaves is not swept when it is gone", "error", err)
		return nil
	}
	h.sweeper, h.name = s, fwd.GetName()
	logger.Debug("sweeper: following the forwarder", "netns", h.NS.UniqueId(), "socket", h.Socket)
	s.mu.Lock()
	s.live[h] = struct{}{}
	s.mu.Unlock()
	return h
}

// Gone sweeps the forwarder's namespace and socket files, unless another registered forwarder
// lives in the namespace. A registration that comes meanwhile waits: its forwarder is located
// after the sweep.
func (h *Home) Gone(ctx context.Context) {
	logger := log.FromContext(ctx).With("forwarder", h.name)
	s := h.sweeper
	s.mu.Lock()
	defer s.mu.Unlock()
	for other := range s.live {
		if other != h && nsfile.Same(other.NS, h.NS) {
			logger.Info("sweeper: not swept: another forwarder lives in its network namespace and keeps what it finds there", "other", other.name)
			return
		}
	}
	var sockets []string
	switch {
	case h.Socket == "":
	case samePath(h.Socket, h.inode):
		sockets = append(sockets, h.Socket)
	default:
		logger.Info("sweeper: its socket file is not swept: the path it listened on names another file here, or none", "path", h.Socket)
	}
	removed, err := sweep.Forwarder(h.NS, sockets...)
	if len(removed.Interfaces)+len(removed.Sockets) > 0 {
		logger.Info("sweeper: removed what the forwarder gone for good left", "interfaces", removed.Interfaces, "sockets", removed.Sockets)
	} else {
		logger.Info("sweeper: the forwarder gone for good left nothing")
	}
	if err != nil {
		hint := ""
		if errors.Is(err, unix.EPERM) {
			hint = "the nsmgr needs CAP_SYS_ADMIN (to enter the namespace) and CAP_NET_ADMIN in it"
		}
		logger.Warn("sweeper: sweeping what the forwarder gone for good left failed", "error", err, "hint", hint)
	}
}

// samePath says whether path names, in this mount namespace, the file of the inode URL.
func samePath(path, inode string) bool {
	u, err := fdpass.PathURL(path)
	return err == nil && u == inode
}
