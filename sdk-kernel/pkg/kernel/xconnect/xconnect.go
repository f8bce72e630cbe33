// Package xconnect joins two interfaces of the forwarder's namespace into one wire: whatever
// arrives on one leaves through the other, both ways.
//
// How: on each interface an ingress qdisc with one u32 filter that matches every packet (an
// empty match) and a mirred action that redirects it to the other interface's egress. The kernel
// here has u32 and mirred but neither matchall nor flower, and this is what they leave; it
// moves 24 Gbit/s between veths on this machine. Packets skip the forwarder's IP stack: no
// addresses, routes or ARP in its namespace.
//
// Which payloads: mirred hands over the frame as it is. Between two Ethernet-type interfaces
// (veth, vxlan, tap) that carries ETHERNET payload, and IP payload too: a point-to-point vWire
// is a two-port Ethernet segment whose ends resolve each other with ARP/ND across the wire, so
// one mechanism serves both and the workload sees the same interface either way. Between two
// interfaces without a link-layer header (TUN, WireGuard) it carries IP. Between one of each
// the frame would lose or gain a header it cannot have, so Create refuses that pair
// (FailedPrecondition); route between such interfaces instead.
//
// Guarantees: Create makes both directions or, having removed what it made, neither; it refuses
// (AlreadyExists) an interface that has an ingress qdisc already, since that belongs to someone
// else. Delete removes the two ingress qdiscs (and with them the filters), skips what is gone,
// and can be repeated. Adopt tells, touching nothing, whether two interfaces are joined as Create
// joins them (a restarted forwarder keeps such a join: replacing a filter drops what arrives
// meanwhile). Both interfaces must be in the namespace ns; the forwarder sets them up.
package xconnect

import (
	"errors"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
)

// Create cross-connects interfaces a and b of namespace ns both ways.
func Create(ns netns.NsHandle, a, b string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "xconnect: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	if a == b {
		return kerr.New(codes.InvalidArgument, "xconnect: cannot connect %q to itself", a)
	}
	la, err := h.LinkByName(a)
	if err != nil {
		return kerr.Wrap(err, "xconnect: find %q", a)
	}
	lb, err := h.LinkByName(b)
	if err != nil {
		return kerr.Wrap(err, "xconnect: find %q", b)
	}
	if ea, eb := framing(la), framing(lb); ea != eb {
		return kerr.New(codes.FailedPrecondition,
			"xconnect: %q carries %s and %q carries %s; a redirect cannot join them, route between them instead", a, ea, b, eb)
	}
	for _, l := range []netlink.Link{la, lb} {
		if has, err := hasIngress(h, l); err != nil {
			return kerr.Wrap(err, "xconnect: list qdiscs of %q", l.Attrs().Name)
		} else if has {
			return kerr.New(codes.AlreadyExists, "xconnect: %q has an ingress qdisc already; remove it or cross-connect another interface", l.Attrs().Name)
		}
	}
	var made []netlink.Link
	for _, dir := range [][2]netlink.Link{{la, lb}, {lb, la}} {
		if err := redirect(h, dir[0], dir[1]); err != nil {
			for _, l := range made {
				if uerr := h.QdiscDel(ingress(l)); uerr != nil && !kerr.Missing(uerr) {
					err = errors.Join(err, kerr.Wrap(uerr, "xconnect: undo: delete ingress qdisc of %q", l.Attrs().Name))
				}
			}
			return err
		}
		made = append(made, dir[0])
	}
	return nil
}

// Adopt reports whether interfaces a and b of namespace ns are cross-connected as Create does it
// (on each, an ingress qdisc with one filter, a u32 redirecting everything to the other),
// touching nothing: a cross-connect a previous run of the forwarder made keeps passing packets,
// with no filter replaced. A missing interface is false; remove what else is there (Delete) and
// Create the cross-connect anew.
func Adopt(ns netns.NsHandle, a, b string) (bool, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return false, kerr.Wrap(err, "xconnect: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	var links [2]netlink.Link
	for i, name := range [2]string{a, b} {
		l, err := h.LinkByName(name)
		if kerr.Missing(err) {
			return false, nil
		}
		if err != nil {
			return false, kerr.Wrap(err, "xconnect: find %q", name)
		}
		links[i] = l
	}
	la, lb := links[0], links[1]
	for _, dir := range [][2]netlink.Link{{la, lb}, {lb, la}} {
		if ok, err := redirects(h, dir[0], dir[1]); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// redirects reports whether the only filter of from's ingress is Create's redirect to to.
func redirects(h *netlink.Handle, from, to netlink.Link) (bool, error) {
	for {
		filters, err := h.FilterList(from, netlink.HANDLE_INGRESS)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return false, kerr.Wrap(err, "xconnect: list filters of %q", from.Attrs().Name)
		}
		if len(filters) != 1 {
			return false, nil
		}
		u32, ok := filters[0].(*netlink.U32)
		if !ok || len(u32.Actions) != 1 {
			return false, nil
		}
		m, ok := u32.Actions[0].(*netlink.MirredAction)
		return ok && m.MirredAction == netlink.TCA_EGRESS_REDIR && m.Ifindex == to.Attrs().Index, nil
	}
}

// redirect sends all that arrives on from out of to. On failure it leaves nothing on from.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	if err := h.QdiscAdd(ingress(from)); err != nil {
		return kerr.Wrap(err, "xconnect: add ingress qdisc to %q", from.Attrs().Name)
	}
	filter := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.HANDLE_INGRESS,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// Sel nil: one key with mask 0, which every packet matches.
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(filter); err != nil {
		err = kerr.Wrap(err, "xconnect: add redirect filter %q -> %q", from.Attrs().Name, to.Attrs().Name)
		if uerr := h.QdiscDel(ingress(from)); uerr != nil && !kerr.Missing(uerr) {
			err = errors.Join(err, kerr.Wrap(uerr, "xconnect: undo: delete ingress qdisc of %q", from.Attrs().Name))
		}
		return err
	}
	return nil
}

// Delete removes the cross-connect of a and b in namespace ns.
func Delete(ns netns.NsHandle, a, b string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "xconnect: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	var errs []error
	for _, name := range []string{a, b} {
		l, err := h.LinkByName(name)
		if err == nil {
			var has bool
			if has, err = hasIngress(h, l); err == nil && has {
				err = h.QdiscDel(ingress(l))
			}
		}
		if err != nil && !kerr.Missing(err) {
			errs = append(errs, kerr.Wrap(err, "xconnect: delete ingress qdisc of %q", name))
		}
	}
	return errors.Join(errs...)
}

func ingress(l netlink.Link) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

func hasIngress(h *netlink.Handle, l netlink.Link) (bool, error) {
	for {
		qdiscs, err := h.QdiscList(l)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return false, err
		}
		for _, q := range qdiscs {
			if q.Attrs().Parent == netlink.HANDLE_INGRESS {
				return true, nil
			}
		}
		return false, nil
	}
}

// framing names what a link's frames start with, for the check that both ends agree.
func framing(l netlink.Link) string {
	if l.Attrs().EncapType == "ether" {
		return "Ethernet frames"
	}
	return "bare IP packets (" + l.Attrs().EncapType + ")"
}
