package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// joinNode gives node n (not the first) a network namespace of its own, joined to this machine
// as the local mesh's nodes are joined: a veth from the namespace's eth0 (the node's address on
// nodesNet, a default route to this machine) to the bridge nodesBridge (this machine's address
// on nodesNet). This machine routes the node's pod subnet to it, so pods reach each other across
// nodes without NAT; the bridge plugin turns on forwarding on both sides.
func joinNode(n *Node) error {
	br, err := nodesBridgeLink()
	if err != nil {
		return err
	}
	if err := newNetns(n.netns); err != nil {
		return fmt.Errorf("cluster: network namespace of %s at %s: %w", n.Name, n.netns, err)
	}
	ns, err := netns.GetFromPath(n.netns)
	if err != nil {
		return err
	}
	defer func() { _ = ns.Close() }()
	host := fmt.Sprintf("vwnode%d", n.index)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(ns),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("cluster: veth %s to %s: %w", host, n.Name, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("cluster: %s in %s: %w", name, n.Name, err)
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: n.IP, Mask: net.CIDRMask(24, 32)}}); err != nil {
				return fmt.Errorf("cluster: address of %s: %w", n.Name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
	}
	if err := h.RouteAdd(&netlink.Route{Gw: hostOnNodesNet}); err != nil {
		return fmt.Errorf("cluster: default route of %s: %w", n.Name, err)
	}
	_, pods, _ := net.ParseCIDR(n.podSubnet())
	if err := netlink.RouteAdd(&netlink.Route{Dst: pods, Gw: n.IP}); err != nil {
		return fmt.Errorf("cluster: route to the pods of %s: %w", n.Name, err)
	}
	return nil
}

// nodesBridgeLink returns the bridge joining the nodes, made at the first call.
func nodesBridgeLink() (netlink.Link, error) {
	br, err := netlink.LinkByName(nodesBridge)
	if err == nil {
		return br, nil
	}
	if !errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, err
	}
	br = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: nodesBridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("cluster: bridge %s: %w", nodesBridge, err)
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: hostOnNodesNet, Mask: net.CIDRMask(24, 32)}}); err != nil {
		return nil, fmt.Errorf("cluster: address of bridge %s: %w", nodesBridge, err)
	}
	return br, netlink.LinkSetUp(br)
}

// newNetns makes a network namespace and keeps it by a bind mount at path (under the state
// folder: unmounting it there is what removes it).
func newNetns(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves this machine's namespace and ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	return <-errc
}

// enterNetns moves the calling thread, which must be locked to its goroutine and never given
// back, into the network namespace at path.
func enterNetns(path string) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer func() { _ = ns.Close() }()
	return netns.Set(ns)
}
