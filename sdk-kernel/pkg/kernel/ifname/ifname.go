// Package ifname names the interfaces a forwarder makes in its own network namespace, and
// removes those a previous run of the forwarder left behind.
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
// vWire, its tunnels) and the two ends of a tunnel, should two forwarders see one connection ID. Names are stable across restarts and, for WireGuard, whose UAPI sockets
// share one directory across namespaces, unique across forwarders (connection IDs are UUIDs).
//
// Sweep removes, in the namespace it is given, every interface that follows the rule and every
// policy rule whose input or output interface does (the routing of a WireGuard connection, see
// l3xconnect); the routes and neighbours of those interfaces go with them. Run it at start,
// before serving: a connection that was alive comes back through heal, which rebuilds it. It
// moves the interfaces into one link group and deletes the group with one request: the kernel
// then waits for one grace period for them all, not one each (about 20 ms per veth), so a
// restarted forwarder serves, and heals its connections, sooner.
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
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	var errs []error
	rules, err := dump(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return nil, kerr.Wrap(err, "ifname: list policy rules")
	}
	for _, r := range rules {
		if Ours(r.IifName) || Ours(r.OifName) {
			if err := h.RuleDel(&r); err != nil && !kerr.Missing(err) {
				errs = append(errs, kerr.Wrap(err, "ifname: delete rule %s", r.String()))
			}
		}
	}
	links, err := dump(h.LinkList)
	if err != nil {
		return nil, errors.Join(append(errs, kerr.Wrap(err, "ifname: list interfaces"))...)
	}
	var removed []string
	grouped := false
	for _, l := range links {
		if Ours(l.Attrs().Name) && h.LinkSetGroup(l, sweepGroup) == nil {
			grouped = true
		}
	}
	if grouped {
		// What the group deletion misses is deleted one by one below.
		_ = nsfile.Do(ns, deleteGroup)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !Ours(name) {
			continue
		}
		if err := h.LinkDel(l); err != nil && !kerr.Missing(err) {
			errs = append(errs, kerr.Wrap(err, "ifname: delete %q", name))
			continue
		}
		removed = append(removed, name)
	}
	slices.Sort(removed)
	return removed, errors.Join(errs...)
}

// sweepGroup is the link group Sweep gathers interfaces in to delete them at once; any number
// other than 0 (the default group) works, this one spells "vw".
const sweepGroup = 0x7677

// deleteGroup deletes every interface of sweepGroup in the calling thread's namespace.
func deleteGroup() error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(sweepGroup)))
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
