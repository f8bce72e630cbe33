// Package nstest gives this module's tests throwaway network namespaces and a text picture of a
// namespace's state for golden files (the ping package checks traffic).
//
// Why: every package here changes kernel state, and its tests must check exactly what was made
// and that removal leaves nothing, without touching the host's interfaces. New makes a named
// namespace (visible to `ip netns list` while a test runs) and removes it in t.Cleanup, failed
// test or not; Dump lists links, addresses, routes, rules, neighbours and tc state in a stable
// order without the values the kernel makes up (indexes, random MACs, IPv6 link-local
// addresses); Golden compares it with testdata/<test name>.golden, rewritten by -update.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with what the tests got")

// RequireRoot skips t unless the test runs as root, which making namespaces needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes network namespaces and interfaces (CI runs as root)")
	}
}

// Name returns prefix followed by n random hex digits; interface and namespace names in tests
// come from here so that parallel runs do not meet.
func Name(prefix string, n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)[:n]
}

// New makes a named network namespace and removes it when the test ends. Its URL for
// nsfile.Open is URL(name).
func New(t testing.TB) (netns.NsHandle, string) {
	t.Helper()
	RequireRoot(t)
	name := Name("vwt-", 8)
	home, err := netns.Get()
	require.NoError(t, err)
	defer func() { _ = home.Close() }()
	// NewNamed moves its thread into the new namespace; Do brings the thread back (or lets it die).
	var ns netns.NsHandle
	err = nsfile.Do(home, func() (err error) {
		ns, err = netns.NewNamed(name)
		return err
	})
	require.NoError(t, err, "make network namespace %s", name)
	t.Cleanup(func() {
		_ = ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("remove network namespace %s: %v", name, err)
		}
	})
	return ns, name
}

// URL is the kernel mechanism's netns URL of the namespace New made under name.
func URL(name string) string {
	return "file:///var/run/netns/" + name
}

// Handle opens a netlink handle in ns, closed when the test ends.
func Handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return h
}

// Veth joins namespaces a and b with a veth pair (aName in a, bName in b), both ends up with
// the given addresses (CIDR; through ipconfig, so IPv6 ones answer at once). It stands for the
// underlay network between two nodes.
func Veth(t testing.TB, a netns.NsHandle, aName string, aAddrs []string, b netns.NsHandle, bName string, bAddrs []string) {
	t.Helper()
	ha, hb := Handle(t, a), Handle(t, b)
	require.NoError(t, ha.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b),
	}))
	for _, end := range []struct {
		ns    netns.NsHandle
		h     *netlink.Handle
		name  string
		addrs []string
	}{{a, ha, aName, aAddrs}, {b, hb, bName, bAddrs}} {
		link, err := end.h.LinkByName(end.name)
		require.NoError(t, err)
		require.NoError(t, end.h.LinkSetUp(link))
		ipc := &networkservice.IPContext{SrcIpAddrs: end.addrs}
		require.NoError(t, ipconfig.Apply(end.ns, end.name, ipconfig.Client, ipc, "underlay"))
	}
}

// HandlesOn counts this process's descriptors that refer to the namespace ns (its own handle
// included): what tests of descriptor passing count to see that nothing holds a namespace.
func HandlesOn(t testing.TB, ns netns.NsHandle) int {
	t.Helper()
	var want unix.Stat_t
	require.NoError(t, unix.Fstat(int(ns), &want))
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		var got unix.Stat_t
		if unix.Stat("/proc/self/fd/"+e.Name(), &got) == nil && got.Dev == want.Dev && got.Ino == want.Ino {
			n++
		}
	}
	return n
}

// Golden compares got with testdata/<test name>.golden, or writes it there under -update.
func Golden(t testing.TB, got string) {
	t.Helper()
	file := filepath.Join("testdata", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(file, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err, "no golden file; run go test -run '%s' -update", t.Name())
	require.Equal(t, string(want), got, "state differs from %s; if the change is right, rerun with -update", file)
}

// Dump prints the state of ns that this module's packages change, one object a line, sorted
// within sections: links, addresses, routes (all tables but local), rules (but the three
// defaults), permanent neighbours, ingress qdiscs and their filters.
func Dump(t testing.TB, ns netns.NsHandle) string {
	t.Helper()
	h := Handle(t, ns)
	links, err := retry(h.LinkList)
	require.NoError(t, err)
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out strings.Builder
	section := func(title string, lines []string) {
		slices.Sort(lines)
		fmt.Fprintf(&out, "%s:\n", title)
		for _, l := range lines {
			fmt.Fprintf(&out, "  %s\n", l)
		}
	}

	var lines []string
	for _, l := range links {
		lines = append(lines, linkLine(l))
	}
	section("links", lines)

	lines = nil
	addrs, err := retry(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
	require.NoError(t, err)
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() || a.IP.IsLoopback() {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %s", names[a.LinkIndex], a.IPNet))
	}
	section("addresses", lines)

	lines = nil
	routes, err := retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	require.NoError(t, err)
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL || r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() {
			continue
		}
		lines = append(lines, routeLine(r, names))
	}
	section("routes", lines)

	lines = nil
	rules, err := retry(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	require.NoError(t, err)
	for _, r := range rules {
		if r.Table == unix.RT_TABLE_LOCAL || r.Table == unix.RT_TABLE_MAIN || r.Table == unix.RT_TABLE_DEFAULT {
			continue
		}
		lines = append(lines, ruleLine(r))
	}
	section("rules", lines)

	lines = nil
	neighs, err := retry(func() ([]netlink.Neigh, error) { return h.NeighList(0, netlink.FAMILY_ALL) })
	require.NoError(t, err)
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP.IsMulticast() {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %s lladdr %s permanent", names[n.LinkIndex], n.IP, n.HardwareAddr))
	}
	section("neighbours", lines)

	lines = nil
	for _, l := range links {
		qdiscs, err := retry(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
		require.NoError(t, err)
		for _, q := range qdiscs {
			if q.Attrs().Parent != netlink.HANDLE_INGRESS {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s ingress", l.Attrs().Name))
			filters, err := retry(func() ([]netlink.Filter, error) { return h.FilterList(l, netlink.HANDLE_INGRESS) })
			require.NoError(t, err)
			for _, f := range filters {
				lines = append(lines, filterLine(l.Attrs().Name, f, names))
			}
		}
	}
	section("tc", lines)
	return out.String()
}

// retry repeats a netlink dump that the kernel interrupted because the state changed under it.
func retry[T any](list func() ([]T, error)) ([]T, error) {
	for {
		got, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return got, err
		}
	}
}

func linkLine(l netlink.Link) string {
	a := l.Attrs()
	state := "down"
	if a.Flags&net.FlagUp != 0 {
		state = "up"
	}
	line := fmt.Sprintf("%s %s %s mtu %d", a.Name, l.Type(), state, a.MTU)
	switch l := l.(type) {
	case *netlink.Vxlan:
		line += fmt.Sprintf(" vni %d local %s remote %s port %d", l.VxlanId, l.SrcAddr, l.Group, l.Port)
	case *netlink.Tuntap:
		line += " " + map[netlink.TuntapMode]string{netlink.TUNTAP_MODE_TUN: "tun", netlink.TUNTAP_MODE_TAP: "tap"}[l.Mode]
	}
	return line
}

func routeLine(r netlink.Route, names map[int]string) string {
	table := fmt.Sprint(r.Table)
	if r.Table == unix.RT_TABLE_MAIN {
		table = "main"
	}
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	if r.Dst == nil && r.Family == unix.AF_INET6 {
		dst = "default6"
	}
	line := fmt.Sprintf("%s %s", table, dst)
	if r.Gw != nil {
		line += " via " + r.Gw.String()
	}
	line += " dev " + names[r.LinkIndex]
	if r.Scope == netlink.SCOPE_LINK {
		line += " scope link"
	}
	if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
		line += " onlink"
	}
	if r.Protocol == unix.RTPROT_KERNEL {
		line += " proto kernel"
	}
	return line
}

func ruleLine(r netlink.Rule) string {
	line := fmt.Sprintf("%d", r.Priority)
	if r.Src != nil {
		line += " from " + r.Src.String()
	} else {
		line += " from all" + map[int]string{unix.AF_INET: "4", unix.AF_INET6: "6"}[r.Family]
	}
	if r.IifName != "" {
		line += " iif " + r.IifName
	}
	if r.OifName != "" {
		line += " oif " + r.OifName
	}
	if r.IPProto != 0 {
		line += fmt.Sprintf(" ipproto %d", r.IPProto)
	}
	if r.Sport != nil {
		line += fmt.Sprintf(" sport %d-%d", r.Sport.Start, r.Sport.End)
	}
	if r.Dport != nil {
		line += fmt.Sprintf(" dport %d-%d", r.Dport.Start, r.Dport.End)
	}
	return line + fmt.Sprintf(" lookup %d", r.Table)
}

func filterLine(link string, f netlink.Filter, names map[int]string) string {
	a := f.Attrs()
	line := fmt.Sprintf("%s ingress %s prio %d", link, f.Type(), a.Priority)
	if u, ok := f.(*netlink.U32); ok {
		for _, act := range u.Actions {
			if m, ok := act.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR {
				line += " mirred redirect to " + names[m.Ifindex]
			}
		}
	}
	return line
}
