// Package ifname names the interfaces a forwarder makes in its own network namespace, and
// removes those a previous run of the forwarder left behind that no connection adopted.
//
// Why: a forwarder that crashed leaves its veth ends, VXLAN devices and routing rules in its
// namespace, and nothing in the mesh will ever close the connections they served (DESIGN: nothing
// is left behind after a crash). With one naming rule for everything a forwarder makes, a new
// run tells its own leftovers from everything else in the namespace by name alone, with no state
// kept on disk.
//
// The rule: "vw" followed by 13 characters of base32 (a-z, 2-7) of the SHA-256 of the connection
// ID and a role ("vw" + 13 = 15 bytes, the kernel's limit), the form of veth.PeerName; the role
// keeps apart the objects one connection has in one forwarder (its client's vWire, its endpoint's
// vWire, its tunnels) and the two ends of a tunnel, should two forwarders see one connection ID.
// Names are stable across restarts and, for WireGuard, whose UAPI sockets share one directory
// across namespaces, unique across forwarders (connection IDs are UUIDs).
//
// Sweep removes, in the namespace it is given, every interface that follows the rule and every
// policy rule whose input or output interface does (the routing of a WireGuard connection, see
// l3xconnect); the routes, neighbours and tc filters of those interfaces go with them. It is
// for a forwarder that will not serve that namespace again (sweep.Forwarder), and for a
// forwarder that adopts nothing (a grace of zero).
//
// A forwarder that restarts adopts instead of sweeping: Mark, at start and before serving, moves
// every interface that follows the rule into a link group of leftovers (which changes nothing
// for traffic: no link goes down); each connection the nsmgr's heal sends again takes its
// interfaces back out of it when they are what the connection asks for (veth.Adopt,
// vxlan.Adopt put them in the default group); SweepMarked, after a grace period long enough for
// heal to have sent every live connection, removes what is still in the group, and the rules
// naming an interface of the rule that is no longer there. The group is the only record: a
// forwarder that crashes again during the grace marks the same interfaces again.
//
// SweepMarked deletes the whole group with one request: the kernel then waits for one grace
// period of RCU for them all, not one each (about 20 ms per veth).
package ifname

import (
	"errors"
	"regexp"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
)

// Roles of the interfaces of one connection in a forwarder.
const (
	Client         = "client"          // the forwarder's end of the client's vWire
	Endpoint       = "endpoint"        // the forwarder's end of the endpoint's vWire
	ClientTunnel   = "client-tunnel"   // the VXLAN or WireGuard device from the client's node
	EndpointTunnel = "endpoint-tunnel" // the VXLAN or WireGuard device to the endpoint's node
)

// Name is the interface of connection connID in role.
func Name(connID, role string) string {
	return veth.PeerName(ID(connID, role))
}

// ID is the identity veth.Spec.ConnID takes for connection connID in role, so that the veth
// package names the forwarder's end Name(connID, role).
func ID(connID, role string) string {
	return connID + "/" + role
}

var ours = regexp.MustCompile(`^vw[a-z2-7]{13}$`)

// Ours reports whether name follows the rule.
func Ours(name string) bool { return ours.MatchString(name) }

// Sweep removes from namespace ns the interfaces whose names follow the rule and the policy rules
// that name such an interface, and returns the names of the interfaces it removed, sorted.
func Sweep(ns netns.NsHandle) ([]string, error) {
	if _, err := Mark(ns); err != nil {
		return nil, err
	}
	return SweepMarked(ns)
}

// Mark moves every interface of namespace ns whose name follows the rule into the group of
// leftovers, and returns their names, sorted. Nothing else changes: the interfaces keep passing
// traffic until SweepMarked, unless adopted before.
func Mark(ns netns.NsHandle) ([]string, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: list interfaces")
	}
	var marked []string
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if !Ours(name) {
			continue
		}
		if err := h.LinkSetGroup(l, LeftoverGroup); err != nil && !kerr.Missing(err) {
			errs = append(errs, kerr.Wrap(err, "ifname: mark %q as a leftover", name))
			continue
		}
		marked = append(marked, name)
	}
	slices.Sort(marked)
	return marked, errors.Join(errs...)
}

// SweepMarked removes from namespace ns the interfaces that are still in the group of leftovers
// (Mark) and the policy rules that name an interface of the rule that is not there (any more),
// and returns the names of the interfaces it removed, sorted.
func SweepMarked(ns netns.NsHandle) ([]string, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: list interfaces")
	}
	var marked []netlink.Link
	for _, l := range links {
		if Ours(l.Attrs().Name) && l.Attrs().Group == LeftoverGroup {
			marked = append(marked, l)
		}
	}
	var errs []error
	if len(marked) > 0 && nsfile.Do(ns, deleteGroup) != nil {
		// The kernel deletes a group all or nothing (it refuses a group holding a device whose
		// kind it cannot delete so): then one by one, from the list above, which also removes an
		// interface adopted since.
		for _, l := range marked {
			if err := h.LinkDel(l); err != nil && !kerr.Missing(err) {
				errs = append(errs, kerr.Wrap(err, "ifname: delete %q", l.Attrs().Name))
			}
		}
	}
	// Listed again, not derived: a connection served meanwhile may have made or adopted some.
	links, err = dump(h.LinkList)
	if err != nil {
		return nil, errors.Join(append(errs, kerr.Wrap(err, "ifname: list interfaces"))...)
	}
	there := map[int]bool{}
	for _, l := range links {
		there[l.Attrs().Index] = true
	}
	var removed []string
	for _, l := range marked {
		if !there[l.Attrs().Index] {
			removed = append(removed, l.Attrs().Name)
		}
	}
	slices.Sort(removed)
	if err := sweepRules(h, links); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// sweepRules deletes the policy rules that name an interface of the rule that is not among links.
func sweepRules(h *netlink.Handle, links []netlink.Link) error {
	there := map[string]bool{}
	for _, l := range links {
		there[l.Attrs().Name] = true
	}
	gone := func(name string) bool { return Ours(name) && !there[name] }
	rules, err := dump(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return kerr.Wrap(err, "ifname: list policy rules")
	}
	var errs []error
	for _, r := range rules {
		if gone(r.IifName) || gone(r.OifName) {
			if err := h.RuleDel(&r); err != nil && !kerr.Missing(err) {
				errs = append(errs, kerr.Wrap(err, "ifname: delete rule %s", r.String()))
			}
		}
	}
	return errors.Join(errs...)
}

// LeftoverGroup is the link group Mark gathers interfaces in, which SweepMarked deletes at once;
// any number other than 0 (the default group) works, this one spells "vw". An adopted
// interface goes back to group 0.
const LeftoverGroup = 0x7677

// deleteGroup deletes every interface of LeftoverGroup in the calling thread's namespace.
func deleteGroup() error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(LeftoverGroup)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// dump repeats a netlink dump the kernel interrupted because the state changed under it.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for {
		got, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return got, err
		}
	}
}
