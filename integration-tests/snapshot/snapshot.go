// Package snapshot records what the data plane of a local mesh holds in the kernel and in its
// socket folders, and says, in sentences, what of it no live connection owns.
//
// Why: vwire promises that nothing is left behind after a crash (DESIGN: "Cleanup never depends
// on a live token"), and a chaos test can only hold it to that with a complete picture: the
// links (with kind, index, alias, master, a VXLAN's VNI and ends), addresses, routes of every
// table, policy rules, static neighbours, tc qdiscs and filters of every namespace the mesh
// made, and the unix sockets of its run folder and of wireguard-go's shared folder. It reads
// the kernel through netlink in each namespace, not through ip's text.
//
// Who owns what: a forwarder names every interface it makes from its connection ID and a role
// (sdk-kernel's ifname), and the workload's end of a vWire carries the alias
// "vwire:<connection ID>/<role>" (sdk-kernel's veth). An interface so named is a connection's;
// everything else on it (addresses, routes, neighbours, qdiscs, filters, the rules whose tables
// route through it, the UAPI socket of a WireGuard device) is that interface's. Ownership (see
// owner.go) lists the connection IDs of the paths live clients hold; Diff then reports every
// connection's object that none of them names, every object that points at something gone (a
// redirect to a deleted interface, a socket nothing listens on), and every other object that
// was not there in the baseline taken when the mesh came up.
//
// Callers rely on: Take reads only the namespaces and folders it is given and changes nothing;
// Diff's findings are sorted and each names its namespace, the object and why it is extra.
package snapshot

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

// AliasPrefix starts the alias of a workload's end of a vWire (sdk-kernel's veth.Alias).
const AliasPrefix = "vwire:"

// Object is one thing the data plane holds.
type Object struct {
	Netns string // the namespace, or "" for a file
	Kind  string // link, address, route, rule, neighbour, qdisc, filter, socket
	What  string // the object in words, without what changes from run to run (interface indexes)
	// Links are the interfaces (of Netns; for a WireGuard socket, of any namespace) the object
	// belongs to: its device, a rule's interfaces or the devices its table routes through.
	Links []string
	// Broken says why the object is wrong whoever owns it (it points at something gone).
	Broken string
}

func (o Object) key() string { return o.Netns + "\x00" + o.Kind + "\x00" + o.What }

func (o Object) String() string {
	where := o.Netns
	if where == "" {
		where = "file"
	}
	return fmt.Sprintf("%s: %s %s", where, o.Kind, o.What)
}

// Link is what the snapshot knows of one interface, for ownership.
type Link struct {
	Netns, Name, Kind, Alias string
	Index                    int
}

// ofConnection tells whether the interface is a connection's: named by ifname's rule or marked
// with a vWire's alias.
func (l Link) ofConnection() bool {
	return ifname.Ours(l.Name) || strings.HasPrefix(l.Alias, AliasPrefix)
}

// Snapshot is the data plane at one moment.
type Snapshot struct {
	Objects []Object
	Links   []Link
}

// Count returns how many objects of kind the namespace holds ("" for every namespace).
func (s *Snapshot) Count(netnsName, kind string) int {
	n := 0
	for _, o := range s.Objects {
		if (netnsName == "" || o.Netns == netnsName) && o.Kind == kind {
			n++
		}
	}
	return n
}

// Take reads the namespaces (names under /var/run/netns) and, unless runDir is "", the sockets
// of the mesh: those of runDir and the UAPI sockets in wireguard-go's folder whose names follow
// ifname's rule.
func Take(namespaces []string, runDir string) (*Snapshot, error) {
	s := &Snapshot{}
	var errs []error
	for _, name := range namespaces {
		if err := s.readNetns(name); err != nil {
			errs = append(errs, err)
		}
	}
	if runDir != "" {
		if err := s.readSockets(runDir, func(string) bool { return true }, nil); err != nil {
			errs = append(errs, err)
		}
		if err := s.readSockets(wireguard.SocketDir, func(n string) bool { return ifname.Ours(strings.TrimSuffix(n, ".sock")) },
			func(n string) []string { return []string{strings.TrimSuffix(n, ".sock")} }); err != nil {
			errs = append(errs, err)
		}
	}
	slices.SortFunc(s.Objects, func(a, b Object) int { return strings.Compare(a.key(), b.key()) })
	return s, errors.Join(errs...)
}

// readSockets records the sockets of dir whose names pass keep, and whether anything listens.
func (s *Snapshot) readSockets(dir string, keep func(string) bool, links func(string) []string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: list the sockets of %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket == 0 || !keep(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		o := Object{Kind: "socket", What: path}
		if links != nil {
			o.Links = links(e.Name())
		}
		if conn, err := net.Dial("unix", path); err == nil {
			_ = conn.Close()
		} else if errors.Is(err, unix.ECONNREFUSED) {
			o.Broken = "nothing listens on it: its server died and nobody removed the file"
		}
		s.Objects = append(s.Objects, o)
	}
	return nil
}

func (s *Snapshot) readNetns(name string) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("snapshot: open namespace %s: %w", name, err)
	}
	defer func() { _ = ns.Close() }()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("snapshot: netlink in %s: %w", name, err)
	}
	defer h.Close()
	r := reader{h: h, netns: name, names: map[int]string{}}
	if err := r.read(); err != nil {
		return fmt.Errorf("snapshot: %s: %w", name, err)
	}
	s.Objects = append(s.Objects, r.objects...)
	s.Links = append(s.Links, r.links...)
	return nil
}

// reader reads one namespace.
type reader struct {
	h       *netlink.Handle
	netns   string
	names   map[int]string // interface index to name
	objects []Object
	links   []Link
}

func (r *reader) add(kind, what string, links []string, broken string) {
	r.objects = append(r.objects, Object{Netns: r.netns, Kind: kind, What: what, Links: links, Broken: broken})
}

// dev is the name of interface index, or a mark that it is gone.
func (r *reader) dev(index int) (string, bool) {
	n, ok := r.names[index]
	if !ok {
		if index == 0 {
			// The kernel forgets a redirect's target when the target is deleted.
			return "a deleted interface", false
		}
		return fmt.Sprintf("ifindex %d (gone)", index), false
	}
	return n, true
}

func (r *reader) read() error {
	links, err := dump(r.h.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		r.names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		r.link(l)
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return r.h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		dev, _ := r.dev(a.LinkIndex)
		r.add("address", fmt.Sprintf("%s on %s", a.IPNet, dev), []string{dev}, "")
	}
	tables, err := r.routes()
	if err != nil {
		return err
	}
	if err := r.rules(tables); err != nil {
		return err
	}
	neighs, err := dump(func() ([]netlink.Neigh, error) { return r.h.NeighList(0, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		// Only static entries are made by the mesh; learned ones come and go with traffic.
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		dev, _ := r.dev(n.LinkIndex)
		r.add("neighbour", fmt.Sprintf("%s lladdr %s on %s (static)", n.IP, n.HardwareAddr, dev), []string{dev}, "")
	}
	return r.tc(links)
}

func (r *reader) link(l netlink.Link) {
	a := l.Attrs()
	r.links = append(r.links, Link{Netns: r.netns, Name: a.Name, Kind: l.Type(), Alias: a.Alias, Index: a.Index})
	what := fmt.Sprintf("%s %s", l.Type(), a.Name)
	if a.Alias != "" {
		what += fmt.Sprintf(" alias %q", a.Alias)
	}
	belongs := []string{a.Name}
	broken := ""
	if a.MasterIndex != 0 {
		master, ok := r.dev(a.MasterIndex)
		what += " master " + master
		if !ok {
			broken = "its master is gone"
		}
	}
	if v, ok := l.(*netlink.Vxlan); ok {
		what += fmt.Sprintf(" vni %d local %s remote %s port %d", v.VxlanId, v.SrcAddr, v.Group, v.Port)
	}
	r.add("link", what, belongs, broken)
}

// routes records the routes of every table and returns, per table, the interfaces its routes
// go through.
func (r *reader) routes() (map[int][]string, error) {
	routes, err := dump(func() ([]netlink.Route, error) {
		return r.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	tables := map[int][]string{}
	for _, rt := range routes {
		var devs []string
		broken := ""
		hops := rt.MultiPath
		if len(hops) == 0 {
			hops = []*netlink.NexthopInfo{{LinkIndex: rt.LinkIndex, Gw: rt.Gw}}
		}
		var via []string
		for _, hop := range hops {
			if hop.LinkIndex == 0 {
				continue
			}
			dev, ok := r.dev(hop.LinkIndex)
			if !ok {
				broken = "it goes through an interface that is gone"
			}
			devs = append(devs, dev)
			if hop.Gw != nil {
				via = append(via, fmt.Sprintf("via %s dev %s", hop.Gw, dev))
			} else {
				via = append(via, "dev "+dev)
			}
		}
		dst := "default"
		if rt.Dst != nil {
			dst = rt.Dst.String()
		}
		what := fmt.Sprintf("%s %s table %s", dst, strings.Join(via, " "), tableName(rt.Table))
		if rt.Type != unix.RTN_UNICAST {
			what = fmt.Sprintf("%s (type %d)", what, rt.Type)
		}
		r.add("route", what, devs, broken)
		tables[rt.Table] = append(tables[rt.Table], devs...)
	}
	return tables, nil
}

func familyName(f int) string {
	if f == unix.AF_INET6 {
		return "ipv6"
	}
	return "ipv4"
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	}
	return fmt.Sprint(t)
}

// rules records the policy rules; a rule belongs to the interfaces it names and to those its
// table routes through.
func (r *reader) rules(tables map[int][]string) error {
	rules, err := dump(func() ([]netlink.Rule, error) { return r.h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, rl := range rules {
		what := fmt.Sprintf("%s %d:", familyName(rl.Family), rl.Priority)
		var belongs []string
		if rl.Src != nil {
			what += " from " + rl.Src.String()
		}
		if rl.Dst != nil {
			what += " to " + rl.Dst.String()
		}
		if rl.IifName != "" {
			what += " iif " + rl.IifName
			belongs = append(belongs, rl.IifName)
		}
		if rl.OifName != "" {
			what += " oif " + rl.OifName
			belongs = append(belongs, rl.OifName)
		}
		what += " lookup " + tableName(rl.Table)
		broken := ""
		if rl.Table != unix.RT_TABLE_MAIN && rl.Table != unix.RT_TABLE_LOCAL && rl.Table != unix.RT_TABLE_DEFAULT {
			if len(tables[rl.Table]) == 0 {
				broken = fmt.Sprintf("table %d is empty", rl.Table)
			}
			belongs = append(belongs, tables[rl.Table]...)
		}
		r.add("rule", what, dedup(belongs), broken)
	}
	return nil
}

// tc records every interface's qdiscs and the filters of its ingress (the mesh's cross-connects:
// u32 with a mirred redirect), with where each redirect goes.
func (r *reader) tc(links []netlink.Link) error {
	qdiscs, err := r.h.QdiscList(nil)
	if err != nil {
		return fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qdiscs {
		a := q.Attrs()
		// The kernel's defaults come and go with the interface; only what someone added counts.
		if a.Handle == 0 || q.Type() == "noqueue" {
			continue
		}
		dev, _ := r.dev(a.LinkIndex)
		r.add("qdisc", fmt.Sprintf("%s %s on %s", q.Type(), netlink.HandleStr(a.Handle), dev), []string{dev}, "")
	}
	for _, l := range links {
		filters, err := r.h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				continue // no ingress qdisc
			}
			return fmt.Errorf("list the filters of %s: %w", l.Attrs().Name, err)
		}
		for _, f := range filters {
			dev := l.Attrs().Name
			what := fmt.Sprintf("%s on %s ingress", f.Type(), dev)
			belongs := []string{dev}
			broken := ""
			if u, ok := f.(*netlink.U32); ok {
				for _, act := range u.Actions {
					if m, ok := act.(*netlink.MirredAction); ok {
						to, found := r.dev(m.Ifindex)
						what += " redirect to " + to
						belongs = append(belongs, to)
						if !found {
							broken = "it redirects to an interface that is gone"
						}
					}
				}
			}
			r.add("filter", what, belongs, broken)
		}
	}
	return nil
}

func dedup(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// dump repeats a netlink dump the kernel interrupted because the state changed under it.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for range 100 {
		got, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return got, err
		}
	}
	return nil, netlink.ErrDumpInterrupted
}
