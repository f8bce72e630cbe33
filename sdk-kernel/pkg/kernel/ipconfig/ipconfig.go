// Package ipconfig puts a connection's IPContext on one side's kernel interface, and takes it off.
//
// Why: NSM's IPContext describes both ends of a vWire at once: src_ip_addrs and src_routes belong
// to the client (NSC), dst_ip_addrs and dst_routes to the endpoint (NSE). Apply picks one side's
// share and turns it into kernel state in that side's namespace:
//   - addresses: the side's own (client: src_ip_addrs, endpoint: dst_ip_addrs), IPv6 ones without
//     duplicate address detection (IPAM made them unique, and DAD would hold traffic for seconds);
//   - link routes (scope link) to the other side's addresses that no own prefix covers;
//   - the side's routes (client: src_routes, endpoint: dst_routes); one without a next hop gets
//     the other side's first address of its family (NSM's GetSrcRoutesWithExplicitNextHop and
//     GetDstRoutesWithExplicitNextHop), unless the other side's prefix covers it; next hops are
//     "onlink": the other side is one hop away on this point-to-point link;
//   - ip_neighbors, but not those for the side's own addresses;
//   - policies (client side only, as in NSM): for each one a routing table of its own and an
//     `ip rule` from the policy's source (or each client address), protocol and ports to it. The
//     table number is derived from the connection ID and the policy's index, so Remove finds it
//     again after a restart; if no routes are given, it holds default routes; routes without a
//     next hop go through the endpoint's address, as the client's routes do.
//
// Neighbour resolution on the interface retries every 100 ms rather than every second (its
// retrans_time_ms, IPv4 and IPv6, set in ns): the first ARP request or neighbour solicitation
// of a new vWire may go out before the forwarder has joined the vWire to the other side, and
// with the kernel's default the packets waiting behind it would wait a second. This is best
// effort: a namespace whose /proc/sys is not writable keeps the default.
//
// A route the same list gives twice is installed once, the later one winning (NSM's
// point-to-point IPAM repeats the link route in src_routes). Other conflicts, such as a route
// another interface already owns, fail with AlreadyExists rather than take the route over.
//
// Guarantees: the input is checked before the kernel is touched (InvalidArgument naming the
// field); Apply either installs everything or, having undone what it made, nothing, and returns
// when the IPv6 addresses answer neighbour discovery (it waits for the kernel to announce them,
// at most a second; otherwise the first packets to them wait a second for ND's next try);
// Adopt keeps a share a previous run applied (a restarted forwarder): it adds what is missing,
// replaces nothing, and refuses an interface holding addresses outside the share;
// Remove deletes what Apply would have made, skips what is already gone, and works when the
// interface is gone (then it removes the rules, the only part that outlives the interface). The
// interface must be up before Apply: the kernel refuses routes through a link that is down, and
// an IPv6 address added to a link that is not ready waits for it.
package ipconfig

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"vwire.dev/api/validate"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/kerr"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// Side says which end of the connection an interface is.
type Side int

const (
	// Client is the NSC's end: it gets src_ip_addrs, src_routes and the policies.
	Client Side = iota
	// Endpoint is the NSE's end: it gets dst_ip_addrs and dst_routes.
	Endpoint
)

func (s Side) String() string {
	if s == Endpoint {
		return "endpoint"
	}
	return "client"
}

// Check reports the first malformed field of ipc as an InvalidArgument error, touching nothing.
func Check(ipc *networkservice.IPContext) error {
	if err := validate.IPContext(ipc); err != nil {
		return fmt.Errorf("ipconfig: %w", err)
	}
	for i, r := range append(append([]*networkservice.Route{}, ipc.GetSrcRoutes()...), ipc.GetDstRoutes()...) {
		if err := sameFamily(r); err != nil {
			field := fmt.Sprintf("src_routes[%d]", i)
			if i >= len(ipc.GetSrcRoutes()) {
				field = fmt.Sprintf("dst_routes[%d]", i-len(ipc.GetSrcRoutes()))
			}
			return kerr.New(codes.InvalidArgument, "ipconfig: ip_context.%s: %v", field, err)
		}
	}
	for i, p := range ipc.GetPolicies() {
		if _, err := protocol(p.GetProto()); err != nil {
			return kerr.New(codes.InvalidArgument, "ipconfig: ip_context.policies[%d].proto: %v", i, err)
		}
		for j, r := range p.GetRoutes() {
			if err := sameFamily(r); err != nil {
				return kerr.New(codes.InvalidArgument, "ipconfig: ip_context.policies[%d].routes[%d]: %v", i, j, err)
			}
		}
	}
	return nil
}

func sameFamily(r *networkservice.Route) error {
	if r.GetNextHop() == "" {
		return nil
	}
	prefix, _ := netip.ParsePrefix(r.GetPrefix())
	hop, _ := netip.ParseAddr(r.GetNextHop())
	if prefix.Addr().Is4() != hop.Unmap().Is4() {
		return fmt.Errorf("next hop %s is not of the family of prefix %s", r.GetNextHop(), r.GetPrefix())
	}
	return nil
}

// protocol reads a policy's protocol: empty (any), a number 0..255, or a common name.
func protocol(s string) (int, error) {
	names := map[string]int{"": 0, "icmp": unix.IPPROTO_ICMP, "tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP,
		"sctp": unix.IPPROTO_SCTP, "icmpv6": unix.IPPROTO_ICMPV6}
	if n, ok := names[s]; ok {
		return n, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("%q is not an IP protocol number 0..255 or tcp, udp, sctp, icmp, icmpv6", s)
	}
	return n, nil
}

// Apply installs side's share of ipc on interface name in namespace ns. id (the connection ID)
// numbers the policy tables; Remove needs the same.
func Apply(ns netns.NsHandle, name string, side Side, ipc *networkservice.IPContext, id string) error {
	h, link, err := open(ns, name, ipc)
	if err != nil {
		return err
	}
	defer h.Close()
	if link == nil {
		return kerr.New(codes.NotFound, "ipconfig: no interface %q in namespace %s", name, ns)
	}
	fastNeighbourRetries(ns, name)
	steps, v6 := plan(link, side, ipc, id)
	var watch *nl.NetlinkSocket
	if len(v6) > 0 {
		// Subscribed before the addresses go on, so that no announcement is missed.
		if watch, err = nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV6_IFADDR); err != nil {
			return kerr.Wrap(err, "ipconfig: watch the addresses of %q", name)
		}
		defer watch.Close()
	}
	for i, s := range steps {
		if err := s.add(h); err != nil {
			err = kerr.Wrap(err, "ipconfig: add %s", s.what)
			for j := i - 1; j >= 0; j-- {
				if uerr := steps[j].del(h); uerr != nil && !kerr.Missing(uerr) {
					err = errors.Join(err, kerr.Wrap(uerr, "ipconfig: undo %s", steps[j].what))
				}
			}
			return err
		}
	}
	if watch != nil {
		settle(watch, link.Attrs().Index, v6)
	}
	return nil
}

// NeighbourRetransMillis is how often neighbour resolution retries on a vWire.
const NeighbourRetransMillis = 100

// fastNeighbourRetries sets the neighbour retransmission time of interface name in ns, for IPv4
// and IPv6 (where IPv6 is on), to NeighbourRetransMillis; errors leave the default.
func fastNeighbourRetries(ns netns.NsHandle, name string) {
	_ = nsfile.Do(ns, func() error {
		for _, family := range []string{"ipv4", "ipv6"} {
			path := "/proc/sys/net/" + family + "/neigh/" + name + "/retrans_time_ms"
			_ = os.WriteFile(path, []byte(strconv.Itoa(NeighbourRetransMillis)), 0)
		}
		return nil
	})
}

// settle waits, at most a second, until the kernel has announced each IPv6 address in want on
// the link with index. For an address without DAD it announces it right after joining the
// address's solicited-node multicast group; until then it drops neighbour solicitations for
// it, and the peer's first packets wait a second for the next try.
func settle(watch *nl.NetlinkSocket, index int, want []net.IP) {
	pending := map[string]bool{}
	for _, ip := range want {
		pending[ip.String()] = true
	}
	_ = watch.SetReceiveTimeout(&unix.Timeval{Usec: 100_000})
	for deadline := time.Now().Add(time.Second); len(pending) > 0 && time.Now().Before(deadline); {
		msgs, _, err := watch.Receive()
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg ||
				int(nl.DeserializeIfAddrmsg(m.Data).Index) != index {
				continue
			}
			attrs, _ := nl.ParseRouteAttr(m.Data[unix.SizeofIfAddrmsg:])
			for _, a := range attrs {
				if a.Attr.Type == unix.IFA_ADDRESS {
					delete(pending, net.IP(a.Value).String())
				}
			}
		}
	}
}

// Remove deletes side's share of ipc from interface name in namespace ns, as Apply installed
// it. If the interface is gone, it removes the policy rules, which outlive it.
func Remove(ns netns.NsHandle, name string, side Side, ipc *networkservice.IPContext, id string) error {
	h, link, err := open(ns, name, ipc)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	steps, _ := plan(link, side, ipc, id)
	for i := len(steps) - 1; i >= 0; i-- {
		if link == nil && steps[i].onLink {
			continue
		}
		if err := steps[i].del(h); err != nil && !kerr.Missing(err) {
			errs = append(errs, kerr.Wrap(err, "ipconfig: remove %s", steps[i].what))
		}
	}
	return errors.Join(errs...)
}

// Adopt keeps side's share of ipc on interface name in namespace ns where a previous run of the
// forwarder applied it, and reports whether it did. It changes nothing that is there: an object
// of the share that is there stays as it is (no route is replaced, no address removed), one that
// is missing is added. It reports false, changing nothing, when the interface is missing or
// holds an address outside the share (it was applied for other addresses): then remove the
// vWire and make it again.
func Adopt(ns netns.NsHandle, name string, side Side, ipc *networkservice.IPContext, id string) (bool, error) {
	h, link, err := open(ns, name, ipc)
	if err != nil || link == nil {
		return false, err
	}
	defer h.Close()
	own := ipc.GetSrcIPNets()
	if side == Endpoint {
		own = ipc.GetDstIPNets()
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false, kerr.Wrap(err, "ipconfig: list the addresses of %q", name)
	}
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() && !slices.ContainsFunc(own, func(n *net.IPNet) bool { return n.String() == a.IPNet.String() }) {
			return false, nil
		}
	}
	steps, _ := plan(link, side, ipc, id)
	for _, s := range steps {
		if err := s.add(h); err != nil && !errors.Is(err, unix.EEXIST) {
			return false, kerr.Wrap(err, "ipconfig: add %s", s.what)
		}
	}
	return true, nil
}

// open checks ipc, opens a netlink handle in ns and finds interface name there: nil if missing.
func open(ns netns.NsHandle, name string, ipc *networkservice.IPContext) (*netlink.Handle, netlink.Link, error) {
	if err := Check(ipc); err != nil {
		return nil, nil, err
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, kerr.Wrap(err, "ipconfig: open netlink in namespace %s", ns)
	}
	link, err := h.LinkByName(name)
	if err != nil && !kerr.Missing(err) {
		h.Close()
		return nil, nil, kerr.Wrap(err, "ipconfig: find %q", name)
	}
	return h, link, nil
}

// step is one kernel object: how to make it and how to remove it.
type step struct {
	what   string // for errors: `route 10.0.1.0/24 via 10.0.0.2 dev "nsm-1"`
	onLink bool   // removed with the link; false for rules
	add    func(*netlink.Handle) error
	del    func(*netlink.Handle) error
}

// plan lists the objects for side in the order Apply makes them, and the side's own IPv6
// addresses. ipc has passed Check.
func plan(link netlink.Link, side Side, ipc *networkservice.IPContext, id string) ([]step, []net.IP) {
	index, name := 0, ""
	if link != nil {
		index, name = link.Attrs().Index, link.Attrs().Name
	}
	own, linkRoutes, routes := ipc.GetSrcIPNets(), ipc.GetDstIPRoutes(), ipc.GetSrcRoutesWithExplicitNextHop()
	if side == Endpoint {
		own, linkRoutes, routes = ipc.GetDstIPNets(), ipc.GetSrcIPRoutes(), ipc.GetDstRoutesWithExplicitNextHop()
	}

	var steps []step
	var v6 []net.IP
	connected := map[string]bool{} // prefix routes the kernel makes for the addresses itself
	seen := map[string]bool{}
	for _, ipNet := range own {
		if seen[ipNet.String()] {
			continue
		}
		seen[ipNet.String()] = true
		if ones, bits := ipNet.Mask.Size(); ones < bits {
			connected[fmt.Sprint(0, &net.IPNet{IP: ipNet.IP.Mask(ipNet.Mask), Mask: ipNet.Mask})] = true
		}
		addr := &netlink.Addr{IPNet: ipNet}
		if ipNet.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
			v6 = append(v6, ipNet.IP)
		}
		steps = append(steps, step{
			what:   fmt.Sprintf("address %s to %q", ipNet, name),
			onLink: true,
			add:    func(h *netlink.Handle) error { return h.AddrAdd(link, addr) },
			del:    func(h *netlink.Handle) error { return h.AddrDel(link, addr) },
		})
	}

	for _, n := range ipc.GetIpNeighbors() {
		ip := net.ParseIP(n.GetIp())
		if contains(own, ip) {
			continue
		}
		mac, _ := net.ParseMAC(n.GetHardwareAddress())
		neigh := &netlink.Neigh{LinkIndex: index, IP: ip, HardwareAddr: mac, State: netlink.NUD_PERMANENT, Family: family(ip)}
		steps = append(steps, step{
			what:   fmt.Sprintf("neighbour %s lladdr %s on %q", ip, mac, name),
			onLink: true,
			add:    func(h *netlink.Handle) error { return h.NeighSet(neigh) },
			del:    func(h *netlink.Handle) error { return h.NeighDel(neigh) },
		})
	}

	// Routes by destination and table, the later one winning.
	var kernelRoutes []*netlink.Route
	at := map[string]int{}
	addRoute := func(r *netlink.Route) {
		key := fmt.Sprint(r.Table, r.Dst)
		if r.Gw == nil && connected[key] {
			return
		}
		if i, ok := at[key]; ok {
			kernelRoutes[i] = r
			return
		}
		at[key] = len(kernelRoutes)
		kernelRoutes = append(kernelRoutes, r)
	}
	for _, r := range linkRoutes {
		addRoute(route(index, r, 0))
	}
	for _, r := range routes {
		addRoute(route(index, r, 0))
	}

	var rules []*netlink.Rule
	if side == Client {
		for i, p := range ipc.GetPolicies() {
			table := Table(id, i)
			pRoutes := p.GetRoutes()
			if len(pRoutes) == 0 {
				pRoutes = defaultRoutes(p, own)
			}
			// Through the endpoint, like src_routes: a default route straight onto the link would
			// make the client ARP for every destination.
			pRoutes = (&networkservice.IPContext{SrcRoutes: pRoutes, DstIpAddrs: ipc.GetDstIpAddrs()}).GetSrcRoutesWithExplicitNextHop()
			for _, r := range pRoutes {
				addRoute(route(index, r, table))
			}
			rules = append(rules, policyRules(p, table, own, pRoutes)...)
		}
	}
	for _, r := range kernelRoutes {
		steps = append(steps, step{
			what:   fmt.Sprintf("route %s on %q", routeText(r), name),
			onLink: true,
			add:    func(h *netlink.Handle) error { return h.RouteAdd(r) },
			del:    func(h *netlink.Handle) error { return h.RouteDel(r) },
		})
	}
	for _, r := range rules {
		steps = append(steps, step{
			what: "rule " + r.String(),
			add:  func(h *netlink.Handle) error { return h.RuleAdd(r) },
			del:  func(h *netlink.Handle) error { return h.RuleDel(r) },
		})
	}
	return steps, v6
}

// route is the kernel form of r on the link with index in table (0: main).
func route(index int, r *networkservice.Route, table int) *netlink.Route {
	dst := r.GetPrefixIPNet()
	dst.IP = dst.IP.Mask(dst.Mask)
	if v4 := dst.IP.To4(); v4 != nil {
		dst.IP = v4
	}
	kr := &netlink.Route{LinkIndex: index, Dst: dst, Scope: netlink.SCOPE_LINK, Table: table}
	if hop := r.GetNextHopIP(); hop != nil {
		kr.Gw, kr.Scope = hop, netlink.SCOPE_UNIVERSE
		kr.SetFlag(netlink.FLAG_ONLINK)
	}
	return kr
}

func routeText(r *netlink.Route) string {
	s := r.Dst.String()
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	if r.Table != 0 {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

// Table is the routing table of the policy at index of connection id: in [2^30, 2^31), far from
// the tables people number by hand and from main (254), local (255) and default (253).
func Table(id string, index int) int {
	h := fnv.New32a()
	_, _ = fmt.Fprintf(h, "%s/%d", id, index)
	return 1<<30 | int(h.Sum32()&(1<<30-1))
}

// defaultRoutes stands for a policy without routes: a default route of each family it concerns.
func defaultRoutes(p *networkservice.PolicyRoute, own []*net.IPNet) []*networkservice.Route {
	v4 := &networkservice.Route{Prefix: "0.0.0.0/0"}
	v6 := &networkservice.Route{Prefix: "::/0"}
	if from, err := netip.ParsePrefix(p.GetFrom()); err == nil {
		if from.Addr().Is4() {
			return []*networkservice.Route{v4}
		}
		return []*networkservice.Route{v6}
	}
	var out []*networkservice.Route
	if len(filter(own, true)) > 0 || len(own) == 0 {
		out = append(out, v4)
	}
	if len(filter(own, false)) > 0 {
		out = append(out, v6)
	}
	return out
}

// policyRules are the rules that send p's traffic to table: from p.From, or else from each own
// address of a family the routes serve (NSM: "applies to all IPs NSM puts on the interface").
func policyRules(p *networkservice.PolicyRoute, table int, own []*net.IPNet, routes []*networkservice.Route) []*netlink.Rule {
	proto, _ := protocol(p.GetProto())
	dport, _ := networkservice.ParsePortRange(p.GetDstPort())
	sport, _ := networkservice.ParsePortRange(p.GetSrcPort())
	rule := func(src *net.IPNet, fam int) *netlink.Rule {
		r := netlink.NewRule()
		r.Table, r.Src, r.Family, r.IPProto = table, src, fam, proto
		if dport != nil {
			r.Dport = netlink.NewRulePortRange(dport.Start, dport.End)
		}
		if sport != nil {
			r.Sport = netlink.NewRulePortRange(sport.Start, sport.End)
		}
		return r
	}
	if p.GetFrom() != "" {
		_, src, _ := net.ParseCIDR(p.GetFrom())
		return []*netlink.Rule{rule(src, family(src.IP))}
	}
	var rules []*netlink.Rule
	for _, v4 := range []bool{true, false} {
		served := false
		for _, r := range routes {
			served = served || (r.GetPrefixIPNet().IP.To4() != nil) == v4
		}
		if !served {
			continue
		}
		fam := unix.AF_INET6
		if v4 {
			fam = unix.AF_INET
		}
		srcs := filter(own, v4)
		if len(srcs) == 0 {
			rules = append(rules, rule(nil, fam))
		}
		for _, s := range srcs {
			bits := 8 * len(s.IP)
			if v4 {
				bits = 32
			}
			rules = append(rules, rule(&net.IPNet{IP: s.IP, Mask: net.CIDRMask(bits, bits)}, fam))
		}
	}
	return rules
}

func filter(nets []*net.IPNet, v4 bool) []*net.IPNet {
	var out []*net.IPNet
	for _, n := range nets {
		if (n.IP.To4() != nil) == v4 {
			out = append(out, n)
		}
	}
	return out
}

func contains(nets []*net.IPNet, ip net.IP) bool {
	for _, n := range nets {
		if n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
