// Package sweep removes what a kernel forwarder made on its node once it is gone for good: its
// vWires' ends, tunnels, cross-connects and routing in its network namespace, and the socket
// files it left.
//
// Why: a forwarder that restarts adopts what its previous run made (see ifname), but one that is
// removed (its node drained, its DaemonSet deleted, a crash loop given up on) leaves, in a
// namespace that outlives it (an `ip netns` namespace; a pod's goes with the pod), veth ends
// whose workload ends still sit in clients' and endpoints' namespaces, VXLAN devices, tc filters
// and policy rules, and in the shared file system its listening socket and the UAPI sockets of
// its wireguard-go devices (DESIGN: a node converges without its forwarder). What a forwarder
// made is recorded in the kernel by name alone (ifname's rule, the workload ends' vwire:
// aliases), so a sweeper needs no state file: Forwarder reads it all from the kernel.
//
// Guarantees: Forwarder removes only objects named by ifname's rule (and the policy rules that
// name them; their routes, neighbours and tc filters go with the interfaces), a WireGuard socket
// of that rule only when nothing listens on it, and each socket path it is given only when
// nothing listens on it either: a live forwarder's socket, or a live forwarder's device in
// another namespace, stays. It can be repeated; what is gone is skipped. Run it only for a
// forwarder that will not come back to ns: a restarting one adopts instead.
package sweep

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

// Removed is what Forwarder removed.
type Removed struct {
	Interfaces []string // in the forwarder's namespace, sorted
	Sockets    []string // socket files: WireGuard's UAPI sockets, then those given
}

// Forwarder removes from namespace ns everything a kernel forwarder made there, the UAPI sockets
// of its wireguard-go devices, and each of the socket files sockets (its listening socket) that
// nothing listens on; it returns what it removed.
func Forwarder(ns netns.NsHandle, sockets ...string) (Removed, error) {
	var out Removed
	var errs []error
	ifaces, err := ifname.Sweep(ns)
	out.Interfaces = ifaces
	errs = append(errs, err)
	wg, err := wireguard.RemoveStale(ifname.Ours)
	out.Sockets = append(out.Sockets, wg...)
	errs = append(errs, err)
	for _, path := range sockets {
		removed, err := removeDead(path)
		if removed {
			out.Sockets = append(out.Sockets, path)
		}
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// removeDead removes the socket file path if nothing listens on it, and says whether it did.
func removeDead(path string) (bool, error) {
	// Bounded: a listener whose backlog is full (alive, but not accepting) would hold the dial.
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = conn.Close()
		return false, nil // alive: another forwarder serves there now
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return false, nil // gone already, or not a socket: not ours to judge
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, kerr.Wrap(err, "sweep: remove the socket %s", path)
	}
	return true, nil
}
