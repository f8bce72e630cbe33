package snapshot_test

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"vwire.dev/integration-tests/snapshot"
	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/xconnect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newNetns makes a named namespace (not vw-*: the local mesh refuses to start beside those)
// and removes it when the test ends.
func newNetns(t *testing.T) (string, *netlink.Handle, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes network namespaces and interfaces (CI runs as root)")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "vwsnap-" + hex.EncodeToString(b)
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ns.Close() })
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	require.NoError(t, err)
	t.Cleanup(h.Close)
	return name, h, ns
}

func veth(t *testing.T, h *netlink.Handle, a, b string) {
	t.Helper()
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b}))
	for _, n := range []string{a, b} {
		l, err := h.LinkByName(n)
		require.NoError(t, err)
		require.NoError(t, h.LinkSetUp(l))
	}
}

func conn(ids ...string) *networkservice.Connection {
	c := &networkservice.Connection{Id: ids[0], Path: &networkservice.Path{}}
	for i, id := range ids {
		c.Path.PathSegments = append(c.Path.PathSegments, &networkservice.PathSegment{Id: id, Name: []string{"nsc", "forwarder", "nse"}[i]})
	}
	return c
}

// TestDiff builds, in a real namespace, what a forwarder makes for two connections (veths named
// by ifname's rule, cross-connected with tc as the forwarder does, a policy rule and its table,
// a workload end marked with a vWire's alias), then things that no connection explains, and
// checks that Diff names exactly what no live connection owns, and why.
func TestDiff(t *testing.T) {
	ns, h, handle := newNetns(t)
	base, err := snapshot.Take([]string{ns}, t.TempDir())
	require.NoError(t, err)
	require.NotZero(t, base.Count(ns, "link"), "lo")

	live, dead := conn("nsc-live", "fwd-live", "nse-live"), conn("nsc-dead", "fwd-dead", "nse-dead")
	liveC, liveE := ifname.Name("fwd-live", ifname.Client), ifname.Name("fwd-live", ifname.Endpoint)
	deadC, deadE := ifname.Name("fwd-dead", ifname.Client), ifname.Name("fwd-dead", ifname.Endpoint)
	veth(t, h, liveC, "wl-live-c")
	veth(t, h, liveE, "wl-live-e")
	veth(t, h, deadC, "wl-dead-c")
	veth(t, h, deadE, "wl-dead-e")
	for name, alias := range map[string]string{
		"wl-live-c": "vwire:fwd-live/client", "wl-live-e": "vwire:fwd-live/endpoint",
		"wl-dead-c": "vwire:fwd-dead/client", "wl-dead-e": "vwire:fwd-dead/endpoint",
	} {
		l, err := h.LinkByName(name)
		require.NoError(t, err)
		require.NoError(t, h.LinkSetAlias(l, alias))
		require.NoError(t, h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(172, 16, 9, byte(len(name))), Mask: net.CIDRMask(32, 32)}}))
	}
	require.NoError(t, xconnect.Create(handle, liveC, liveE))
	require.NoError(t, xconnect.Create(handle, deadC, deadE))
	// A table routed through the dead connection's interface, and a rule that looks it up.
	dl, err := h.LinkByName(deadE)
	require.NoError(t, err)
	_, dst, _ := net.ParseCIDR("172.16.9.0/24")
	require.NoError(t, h.RouteAdd(&netlink.Route{LinkIndex: dl.Attrs().Index, Dst: dst, Table: 1000, Scope: netlink.SCOPE_LINK}))
	rule := netlink.NewRule()
	rule.Table, rule.Priority, rule.Src = 1000, 100, &net.IPNet{IP: net.IPv4(172, 16, 9, 1), Mask: net.CIDRMask(32, 32)}
	require.NoError(t, h.RuleAdd(rule))
	// A rule of an empty table, and a pair nobody named: neither explained by any connection.
	empty := netlink.NewRule()
	empty.Table, empty.Priority = 1001, 101
	require.NoError(t, h.RuleAdd(empty))
	veth(t, h, "stray0", "stray1")
	stray, err := h.LinkByName("stray0")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetAlias(stray, "not a vWire"))

	owned := snapshot.NewOwnership()
	owned.Add(live, true)
	owned.Add(dead, false)
	now, err := snapshot.Take([]string{ns}, "")
	require.NoError(t, err)
	require.Equal(t, 2, now.Count(ns, "qdisc")/2, "two cross-connects: an ingress qdisc on each of four interfaces")
	require.Equal(t, 4, now.Count(ns, "filter"), "a redirect filter on each of four interfaces")

	found := snapshot.Diff(base, now, owned)
	text := snapshot.Lines(found)
	for _, o := range found {
		for _, l := range o.Object.Links {
			require.NotContains(t, []string{liveC, liveE, "wl-live-c", "wl-live-e"}, l, "a live connection's object is not extra:\n%s", text)
		}
	}
	for _, want := range []string{
		"link veth " + deadC, "link veth " + deadE, `link veth wl-dead-c alias "vwire:fwd-dead/client"`,
		"filter u32 on " + deadC + " ingress redirect to " + deadE,
		"qdisc ingress ffff:0 on " + deadE,
		"172.16.9.0/24 dev " + deadE + " table 1000",
		"rule ipv4 100: from 172.16.9.1/32 lookup 1000",
		"rule ipv4 101: lookup 1001: table 1001 is empty",
		`link veth stray0 alias "not a vWire"`, "it is new since the mesh came up and belongs to no connection",
		"of connection nsc-dead (nsc > forwarder > nse), which no live client holds",
	} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, text, "wl-live-c")
	short := snapshot.Report(found)
	require.Contains(t, short, "connection nsc-dead (nsc > forwarder > nse):\n")
	require.Contains(t, short, ": veth "+deadC+", with ")
	require.Contains(t, short, "rule ipv4 101: lookup 1001: table 1001 is empty")

	// The dead connection's endpoint end goes; the redirect to it stays behind, pointing at nothing.
	require.NoError(t, h.LinkDel(dl))
	now, err = snapshot.Take([]string{ns}, "")
	require.NoError(t, err)
	text = snapshot.Lines(snapshot.Diff(base, now, owned))
	require.Contains(t, text, "redirect to a deleted interface")
	require.Contains(t, text, "it redirects to an interface that is gone")

	// Everything removed: nothing extra.
	// Each with its peer.
	for _, n := range []string{deadC, "wl-live-c", "wl-live-e", "stray0"} {
		l, err := h.LinkByName(n)
		require.NoError(t, err)
		require.NoError(t, h.LinkDel(l))
	}
	require.NoError(t, h.RuleDel(empty))
	require.NoError(t, h.RuleDel(rule))
	now, err = snapshot.Take([]string{ns}, "")
	require.NoError(t, err)
	require.Empty(t, snapshot.Diff(base, now, owned))
	require.Equal(t, "nothing extra", snapshot.Report(nil))
}

// TestSockets checks that a socket nothing listens on is found broken, and one that answers is not.
func TestSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: Take reads wireguard-go's socket folder")
	}
	dir := t.TempDir()
	l, err := net.Listen("unix", dir+"/live.sock")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: dir + "/dead.sock", Net: "unix"})
	require.NoError(t, err)
	dead.SetUnlinkOnClose(false)
	require.NoError(t, dead.Close())

	base := &snapshot.Snapshot{}
	now, err := snapshot.Take(nil, dir)
	require.NoError(t, err)
	var found []string
	for _, f := range snapshot.Diff(base, now, snapshot.NewOwnership()) {
		found = append(found, f.String())
	}
	require.Contains(t, found, "file: socket "+dir+"/dead.sock: nothing listens on it: its server died and nobody removed the file")
	require.Contains(t, found, "file: socket "+dir+"/live.sock: it is new since the mesh came up and belongs to no connection")
}
