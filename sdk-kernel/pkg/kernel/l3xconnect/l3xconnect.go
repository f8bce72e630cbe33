// Package l3xconnect joins a vWire's veth end and an interface that carries bare IP packets (a
// TUN device, WireGuard) in the forwarder's namespace, by routing between them.
//
// Why: a tc redirect hands a frame over as it is, and an Ethernet frame cannot go into a device
// without a link layer, nor a bare packet come out of one onto a veth (see xconnect). So for a
// vWire of IP payload tunnelled through WireGuard the forwarder routes: what comes in on the
// veth end goes out of the tunnel, what comes out of the tunnel goes to the workload.
//
// How, for connection id, with the veth end V (in the forwarder), the workload's end W (in the
// workload's namespace) and the L3 interface T:
//   - two routing tables of the connection's own (numbers from the connection ID, in
//     [2^30, 2^31) like ipconfig's), chosen by rules on the input interface, at priority
//     RulePriority: "iif V lookup toTunnel" holds a default route of each family the vWire has
//     into T; "iif T lookup toWorkload" holds a default route of each family through W's own
//     address of that family on V. Addresses that two connections both use (two endpoints'
//     address pools may overlap) do not meet: no route of one connection is in another's table,
//     and the forwarder's main table is not touched.
//   - permanent neighbour entries, so that no ARP or neighbour discovery crosses V (the
//     forwarder's end has no address to answer or ask with): in the forwarder, W's addresses at
//     W's MAC on V; in the workload, the addresses W sends to (the other side's addresses and the
//     next hops of W's routes) at V's MAC on W. They go with the interfaces.
//   - the forwarder's loopback interface up (without it, and without an IPv4 address, the kernel
//     has no local table to check an IPv4 gateway against, and refuses it);
//   - IP forwarding in the forwarder's namespace (net.ipv4.ip_forward, net.ipv6.conf.all
//     .forwarding) and no reverse-path filter there (net.ipv4.conf.{all,V,T}.rp_filter = 0: the
//     filter checks the source against the main table, which has no route to a connection's
//     addresses). These are sysctls of the forwarder's namespace only; the forwarder runs in one
//     of its own, never in the host's.
//
// Adoption: Create keeps what a previous run of the forwarder made for the same connection (a
// restarted forwarder whose WireGuard device was made anew, its vWire adopted): a rule that is
// there stays, a table's route that is there is replaced in one step (the device's index may be
// new), and neither is undone if a later step fails; neighbours are set as always.
//
// Guarantees: Create checks its input before touching anything, makes everything or, having
// removed what it made, nothing (the sysctls and lo stay: they are the namespace's, not the
// connection's). Delete removes the rules and the tables' routes, skips what is gone, can be
// repeated, and needs only the names and the connection ID (also after a restart).
package l3xconnect

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// RulePriority is the priority of the rules that send a connection's traffic to its tables:
// before the main table's (32766).
const RulePriority = 1000

// Veth is the vWire side of the join.
type Veth struct {
	Name         string                    // the forwarder's end, in the forwarder's namespace
	Workload     netns.NsHandle            // the workload's namespace
	WorkloadName string                    // the workload's end
	Side         ipconfig.Side             // which end of the connection the workload is
	IP           *networkservice.IPContext // the connection's IP context
}

// Tables are the routing tables of connection id: toTunnel, toWorkload.
func Tables(id string) (toTunnel, toWorkload int) {
	return ipconfig.Table("l3xconnect/"+id, 0), ipconfig.Table("l3xconnect/"+id, 1)
}

// Create routes between v and the L3 interface l3 of namespace ns for connection id.
func Create(ns netns.NsHandle, v Veth, l3, id string) error {
	if err := ipconfig.Check(v.IP); err != nil {
		return err
	}
	own, other := addresses(v.Side, v.IP)
	if len(own) == 0 {
		return kerr.New(codes.FailedPrecondition,
			"l3xconnect: the %s has no address in the IP context; routing to it needs one (give the endpoint an IPAM)", v.Side)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	hw, err := netlink.NewHandleAt(v.Workload, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: open netlink in the workload's namespace")
	}
	defer hw.Close()
	veth, err := h.LinkByName(v.Name)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: find %q", v.Name)
	}
	tunnel, err := h.LinkByName(l3)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: find %q", l3)
	}
	workload, err := hw.LinkByName(v.WorkloadName)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: find %q in the workload's namespace", v.WorkloadName)
	}
	if err := sysctls(ns, v.Name, l3); err != nil {
		return err
	}
	if err := loopbackUp(h); err != nil {
		return err
	}

	var made []undo
	rollback := func(err error) error {
		for i := len(made) - 1; i >= 0; i-- {
			if uerr := made[i].del(); uerr != nil && !kerr.Missing(uerr) {
				err = errors.Join(err, kerr.Wrap(uerr, "l3xconnect: undo %s", made[i].what))
			}
		}
		return err
	}
	add := func(what string, do, del func() error) error {
		err := do()
		if errors.Is(err, unix.EEXIST) {
			return nil // a previous run made it (see the package comment): not this call's to undo
		}
		if err != nil {
			return kerr.Wrap(err, "l3xconnect: add %s", what)
		}
		made = append(made, undo{what, del})
		return nil
	}

	for _, ip := range other {
		n := &netlink.Neigh{LinkIndex: workload.Attrs().Index, IP: ip, HardwareAddr: veth.Attrs().HardwareAddr,
			State: netlink.NUD_PERMANENT, Family: family(ip)}
		if err := add(fmt.Sprintf("neighbour %s lladdr %s on %q (workload)", ip, n.HardwareAddr, v.WorkloadName),
			func() error { return hw.NeighSet(n) }, func() error { return hw.NeighDel(n) }); err != nil {
			return rollback(err)
		}
	}
	toTunnel, toWorkload := Tables(id)
	for _, ip := range own {
		n := &netlink.Neigh{LinkIndex: veth.Attrs().Index, IP: ip, HardwareAddr: workload.Attrs().HardwareAddr,
			State: netlink.NUD_PERMANENT, Family: family(ip)}
		if err := add(fmt.Sprintf("neighbour %s lladdr %s on %q", ip, n.HardwareAddr, v.Name),
			func() error { return h.NeighSet(n) }, func() error { return h.NeighDel(n) }); err != nil {
			return rollback(err)
		}
	}
	for _, r := range routes(veth.Attrs().Index, tunnel.Attrs().Index, own, toTunnel, toWorkload) {
		if err := add("route "+r.String(), func() error { return addOrReplace(h, r) }, func() error { return h.RouteDel(r) }); err != nil {
			return rollback(err)
		}
	}
	for _, r := range rules(v.Name, l3, own, toTunnel, toWorkload) {
		if err := add(r.String(), func() error { return h.RuleAdd(r) }, func() error { return h.RuleDel(r) }); err != nil {
			return rollback(err)
		}
	}
	return nil
}

// Delete removes what Create made for connection id between the interfaces named veth and l3.
func Delete(ns netns.NsHandle, veth, l3, id string) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return kerr.Wrap(err, "l3xconnect: open netlink in the forwarder's namespace")
	}
	defer h.Close()
	toTunnel, toWorkload := Tables(id)
	var errs []error
	both := []net.IP{net.IPv4zero, net.IPv6zero} // one of each family: what the rules need
	for _, r := range rules(veth, l3, both, toTunnel, toWorkload) {
		if err := h.RuleDel(r); err != nil && !kerr.Missing(err) {
			errs = append(errs, kerr.Wrap(err, "l3xconnect: delete %s", r))
		}
	}
	for _, table := range []int{toTunnel, toWorkload} {
		rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, kerr.Wrap(err, "l3xconnect: list table %d", table))
			continue
		}
		for _, r := range rs {
			if err := h.RouteDel(&r); err != nil && !kerr.Missing(err) {
				errs = append(errs, kerr.Wrap(err, "l3xconnect: delete route %s", r))
			}
		}
	}
	return errors.Join(errs...)
}

// addOrReplace adds route r; where the table has a route to r's destination already (a previous
// run's, through a device that may have been made anew since), it replaces it in one step, which
// drops no packet, and returns EEXIST.
func addOrReplace(h *netlink.Handle, r *netlink.Route) error {
	err := h.RouteAdd(r)
	if errors.Is(err, unix.EEXIST) {
		if rerr := h.RouteReplace(r); rerr != nil {
			return rerr
		}
	}
	return err
}

type undo struct {
	what string
	del  func() error
}

// addresses returns the workload's own addresses and those it sends to across the vWire: the
// other side's addresses and the next hops of the workload's routes.
func addresses(side ipconfig.Side, ipc *networkservice.IPContext) (own, other []net.IP) {
	ownNets, otherNets, routes := ipc.GetSrcIPNets(), ipc.GetDstIPNets(), ipc.GetSrcRoutes()
	if side == ipconfig.Endpoint {
		ownNets, otherNets, routes = ipc.GetDstIPNets(), ipc.GetSrcIPNets(), ipc.GetDstRoutes()
	}
	if side == ipconfig.Client {
		for _, p := range ipc.GetPolicies() {
			routes = append(routes, p.GetRoutes()...)
		}
	}
	seen := map[string]bool{}
	collect := func(list *[]net.IP, ip net.IP) {
		if ip == nil || seen[ip.String()] {
			return
		}
		seen[ip.String()] = true
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		*list = append(*list, ip)
	}
	for _, n := range ownNets {
		collect(&own, n.IP)
	}
	for _, n := range otherNets {
		collect(&other, n.IP)
	}
	for _, r := range routes {
		collect(&other, r.GetNextHopIP())
	}
	return own, other
}

// routes are the two tables' default routes for each family of own: into the tunnel, and
// through the workload's first address of the family.
func routes(veth, tunnel int, own []net.IP, toTunnel, toWorkload int) []*netlink.Route {
	var out []*netlink.Route
	for _, ip := range firstOfEachFamily(own) {
		def := defaultNet(ip)
		out = append(out,
			&netlink.Route{LinkIndex: tunnel, Dst: def, Table: toTunnel, Scope: netlink.SCOPE_LINK, Family: family(ip)},
			&netlink.Route{LinkIndex: veth, Dst: def, Gw: ip, Table: toWorkload, Flags: int(netlink.FLAG_ONLINK), Family: family(ip)})
	}
	return out
}

// rules send, for each family of own, what comes in on veth to toTunnel and what comes in on l3
// to toWorkload.
func rules(veth, l3 string, own []net.IP, toTunnel, toWorkload int) []*netlink.Rule {
	var out []*netlink.Rule
	for _, ip := range firstOfEachFamily(own) {
		for _, r := range []struct {
			iif   string
			table int
		}{{veth, toTunnel}, {l3, toWorkload}} {
			rule := netlink.NewRule()
			rule.Priority, rule.Family, rule.IifName, rule.Table = RulePriority, family(ip), r.iif, r.table
			out = append(out, rule)
		}
	}
	return out
}

func firstOfEachFamily(ips []net.IP) []net.IP {
	var v4, v6 net.IP
	for _, ip := range ips {
		switch {
		case ip.To4() != nil && v4 == nil:
			v4 = ip
		case ip.To4() == nil && v6 == nil:
			v6 = ip
		}
	}
	var out []net.IP
	for _, ip := range []net.IP{v4, v6} {
		if ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

func defaultNet(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// loopbackUp sets the forwarder's loopback interface up. The kernel checks a gateway against the
// namespace's local routing table, which exists only once the namespace has an IPv4 address: a
// namespace without one (an IPv6 underlay) refuses every IPv4 gateway ("Nexthop has invalid
// gateway") until lo is up.
func loopbackUp(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	return kerr.Wrap(err, "l3xconnect: set lo up in the forwarder's namespace")
}

// sysctls turns on IP forwarding in namespace ns and turns off the reverse-path filter there
// and on the two interfaces.
func sysctls(ns netns.NsHandle, ifaces ...string) error {
	settings := map[string]string{
		"net/ipv4/ip_forward":             "1",
		"net/ipv6/conf/all/forwarding":    "1",
		"net/ipv4/conf/all/rp_filter":     "0",
		"net/ipv4/conf/default/rp_filter": "0",
	}
	for _, name := range ifaces {
		settings["net/ipv4/conf/"+name+"/rp_filter"] = "0"
	}
	return nsfile.Do(ns, func() error {
		for key, value := range settings {
			// /proc/sys/net shows the namespace of the thread that opens it: ns, here.
			if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0); err != nil {
				return kerr.Wrap(err, "l3xconnect: set %s = %s in the forwarder's namespace", key, value)
			}
		}
		return nil
	})
}
