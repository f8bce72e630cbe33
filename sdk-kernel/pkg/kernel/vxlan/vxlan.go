// Package vxlan makes the kernel VXLAN device of a remote vWire: a point-to-point tunnel to one
// remote VTEP, carrying Ethernet frames in UDP.
//
// Why: NSM's VXLAN mechanism joins two forwarders on different nodes. Each forwarder makes one
// device per connection, with the connection's VNI, its own underlay address as the source and
// the other forwarder's as the destination, and cross-connects it with the workload's vWire (see
// xconnect). Devices of many connections share the UDP port: the kernel tells them apart by VNI.
// The device learns no MACs (there is only one remote) and is set up when made.
//
// Guarantees: the Config is checked before anything is made (InvalidArgument: VNI outside
// 1..16777215, addresses missing or of two families, a bad name); a taken name is AlreadyExists;
// Create makes an up device or, having removed it, nothing. Delete removes it, skips it when it
// is gone, and refuses (FailedPrecondition) to remove an interface of that name that is not a
// VXLAN device. Adopt keeps, untouched, a device a previous run of the forwarder made when it is
// what the Config asks for; VNI reads the VNI a device of a name holds.
package vxlan

import (
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/api/validate"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
)

// DefaultPort is the IANA port of VXLAN, used when Config.Port is 0.
const DefaultPort = 4789

// Config is one VXLAN device.
type Config struct {
	Name   string     // interface name, at most 15 bytes
	VNI    uint32     // 1..16777215
	Local  netip.Addr // this node's underlay address
	Remote netip.Addr // the remote node's underlay address, of the same family
	Port   uint16     // UDP destination and listening port; 0: DefaultPort
	MTU    int        // 0: the kernel's choice (underlay MTU less the 50 or 70 bytes of headers)
}

func (c *Config) check() error {
	if err := validate.InterfaceName(c.Name); err != nil {
		return kerr.New(codes.InvalidArgument, "vxlan: %v", err)
	}
	if c.VNI == 0 || c.VNI >= 1<<24 {
		return kerr.New(codes.InvalidArgument, "vxlan: VNI %d is outside 1..16777215", c.VNI)
	}
	for _, a := range []struct {
		name string
		addr netip.Addr
	}{{"local", c.Local}, {"remote", c.Remote}} {
		if !a.addr.IsValid() {
			return kerr.New(codes.InvalidArgument, "vxlan: no %s address; both underlay addresses are needed", a.name)
		}
		if a.addr.IsUnspecified() || a.addr.IsMulticast() {
			return kerr.New(codes.InvalidArgument, "vxlan: %s address %q is not a unicast IP address", a.name, a.addr)
		}
	}
	if c.Local.Unmap().Is4() != c.Remote.Unmap().Is4() {
		return kerr.New(codes.InvalidArgument, "vxlan: local address %s and remote address %s are of different families", c.Local, c.Remote)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return kerr.New(codes.InvalidArgument, "vxlan: MTU %d is outside 68..65535", c.MTU)
	}
	return nil
}

// Create makes the VXLAN device c in namespace ns and sets it up.
func Create(ns netns.NsHandle, c Config) error {
	if err := c.check(); err != nil {
		return err
	}
	port := int(c.Port)
	if port == 0 {
		port = DefaultPort
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "vxlan: open netlink in namespace %s", ns)
	}
	defer h.Close()
	if _, err := h.LinkByName(c.Name); err == nil {
		return kerr.New(codes.AlreadyExists, "vxlan: interface %q already exists; delete it or pick another name", c.Name)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = c.Name, c.MTU
	dev := &netlink.Vxlan{
		LinkAttrs: attrs,
		VxlanId:   int(c.VNI),
		SrcAddr:   c.Local.Unmap().AsSlice(),
		Group:     c.Remote.Unmap().AsSlice(), // a unicast group is the one remote VTEP
		Port:      port,
		Learning:  false,
	}
	if err := h.LinkAdd(dev); err != nil {
		return kerr.Wrap(err, "vxlan: add %q (VNI %d, %s -> %s port %d)", c.Name, c.VNI, c.Local, c.Remote, port)
	}
	if err := h.LinkSetUp(dev); err != nil {
		err = kerr.Wrap(err, "vxlan: set %q up", c.Name)
		if derr := h.LinkDel(dev); derr != nil && !kerr.Missing(derr) {
			err = errors.Join(err, kerr.Wrap(derr, "vxlan: undo: delete %q", c.Name))
		}
		return err
	}
	return nil
}

// Adopt keeps the VXLAN device c.Name of namespace ns that a previous run of the forwarder made,
// if it is what c asks for (VNI, addresses, port, MTU when c sets one, no learning, up), and
// reports whether it did. It changes nothing that passes traffic: the device only goes back to
// the default link group, out of ifname's leftovers. A device of that name that differs stays
// as it is, and Adopt reports false: Delete it and Create c.
func Adopt(ns netns.NsHandle, c Config) (bool, error) {
	if err := c.check(); err != nil {
		return false, err
	}
	port := int(c.Port)
	if port == 0 {
		port = DefaultPort
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return false, kerr.Wrap(err, "vxlan: open netlink in namespace %s", ns)
	}
	defer h.Close()
	link, err := h.LinkByName(c.Name)
	if kerr.Missing(err) {
		return false, nil
	}
	if err != nil {
		return false, kerr.Wrap(err, "vxlan: find %q", c.Name)
	}
	dev, ok := link.(*netlink.Vxlan)
	if !ok || dev.VxlanId != int(c.VNI) || dev.Port != port || dev.Learning ||
		!dev.SrcAddr.Equal(c.Local.Unmap().AsSlice()) || !dev.Group.Equal(c.Remote.Unmap().AsSlice()) ||
		(c.MTU != 0 && dev.MTU != c.MTU) || dev.Flags&net.FlagUp == 0 {
		return false, nil
	}
	if err := h.LinkSetGroup(dev, 0); err != nil {
		return false, kerr.Wrap(err, "vxlan: adopt %q (default link group)", c.Name)
	}
	return true, nil
}

// VNI is the VNI of the VXLAN device name in namespace ns, 0 if there is none.
func VNI(ns netns.NsHandle, name string) uint32 {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return 0
	}
	defer h.Close()
	if dev, err := h.LinkByName(name); err == nil {
		if v, ok := dev.(*netlink.Vxlan); ok {
			return uint32(v.VxlanId)
		}
	}
	return 0
}

// Delete removes the VXLAN device name from namespace ns.
func Delete(ns netns.NsHandle, name string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "vxlan: open netlink in namespace %s", ns)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if kerr.Missing(err) {
		return nil
	}
	if err != nil {
		return kerr.Wrap(err, "vxlan: find %q", name)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return kerr.New(codes.FailedPrecondition, "vxlan: %q is a %s device, not VXLAN; not deleting it", name, link.Type())
	}
	if err := h.LinkDel(link); err != nil && !kerr.Missing(err) {
		return kerr.Wrap(err, "vxlan: delete %q", name)
	}
	return nil
}
