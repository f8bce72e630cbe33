package ifname_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
	"vwire.dev/sdk-kernel/pkg/kernel/vxlan"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ours bool
	}{
		{ifname.Name("c-1", ifname.Client), true},
		{ifname.Name("c-1", ifname.Endpoint), true},
		{ifname.Name("c-1", ifname.ClientTunnel), true},
		{"vwabcdefghijklm", true},
		{"vwabcdefghijkl", false},  // 14 bytes
		{"vwabcdefghijk1m", false}, // 1 is not base32
		{"vwg1a2b3c4d", false},     // a test's name
		{"eth0", false},
		{"vwABCDEFGHIJKLM", false},
	} {
		require.Equal(t, tt.ours, ifname.Ours(tt.name), tt.name)
	}
	names := map[string]bool{}
	for _, role := range []string{ifname.Client, ifname.Endpoint, ifname.ClientTunnel, ifname.EndpointTunnel} {
		n := ifname.Name("c-1", role)
		require.Len(t, n, 15)
		require.Equal(t, n, ifname.Name("c-1", role), "stable")
		require.Equal(t, veth.PeerName(ifname.ID("c-1", role)), n, "veth names its end by the same rule")
		names[n] = true
	}
	require.Len(t, names, 4, "one connection's roles do not meet")
}

// TestSweep leaves a namespace with what a forwarder made and things it did not, and checks that
// Sweep removes exactly the former.
func TestSweep(t *testing.T) {
	ns, _ := nstest.New(t)
	h := nstest.Handle(t, ns)
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo))
	before := nstest.Dump(t, ns)

	mine := []string{ifname.Name("a", ifname.Client), ifname.Name("b", ifname.Endpoint)}
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: mine[0]}, PeerName: "wl0"}))
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: mine[1]}, PeerName: "wl1"}))
	tunnel := ifname.Name("a", ifname.EndpointTunnel)
	require.NoError(t, vxlan.Create(ns, vxlan.Config{Name: tunnel, VNI: 7, Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.2")}))
	for _, name := range mine {
		rule := netlink.NewRule()
		rule.IifName, rule.Table, rule.Priority = name, 1<<30+1, 1000
		require.NoError(t, h.RuleAdd(rule))
	}
	rule := netlink.NewRule()
	rule.OifName, rule.Table, rule.Priority = mine[0], 1<<30+2, 1000
	require.NoError(t, h.RuleAdd(rule))

	// Not the forwarder's: a veth named otherwise, and a rule naming it.
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}, PeerName: "keep1"}))
	keep := netlink.NewRule()
	keep.IifName, keep.Table, keep.Priority = "keep0", 77, 1000
	require.NoError(t, h.RuleAdd(keep))
	theirs := nstest.Dump(t, ns)

	removed, err := ifname.Sweep(ns)
	require.NoError(t, err)
	want := append(append([]string{}, mine...), tunnel)
	require.ElementsMatch(t, want, removed)
	require.IsIncreasing(t, removed)

	require.NoError(t, h.RuleDel(keep))
	require.NoError(t, h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}}))
	require.Equal(t, before, nstest.Dump(t, ns), "the forwarder's interfaces and rules are gone, and only they")
	require.NotEqual(t, before, theirs)

	removed, err = ifname.Sweep(ns)
	require.NoError(t, err)
	require.Empty(t, removed, "a second sweep finds nothing")
}

// BenchmarkSweep10 removes ten of the forwarder's veth pairs, as a restart after a crash does.
func BenchmarkSweep10(b *testing.B) {
	ns, _ := nstest.New(b)
	h := nstest.Handle(b, ns)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := range 10 {
			require.NoError(b, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ifname.Name(fmt.Sprint(j), ifname.Client)}, PeerName: fmt.Sprint("wl", j)}))
		}
		b.StartTimer()
		removed, err := ifname.Sweep(ns)
		require.NoError(b, err)
		require.Len(b, removed, 10)
	}
}

// TestMarkThenSweepMarked: of a previous run's interfaces, Mark marks all and changes nothing
// else; the one adopted in between (vxlan.Adopt) stays, with its rule, and SweepMarked removes
// the others and the rules that name them.
func TestMarkThenSweepMarked(t *testing.T) {
	ns, _ := nstest.New(t)
	h := nstest.Handle(t, ns)
	lost := ifname.Name("lost", ifname.Client)
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: lost}, PeerName: "wl0"}))
	cfg := vxlan.Config{Name: ifname.Name("kept", ifname.EndpointTunnel), VNI: 7, Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.2")}
	require.NoError(t, vxlan.Create(ns, cfg))
	for i, name := range []string{lost, cfg.Name} {
		rule := netlink.NewRule()
		rule.IifName, rule.Table, rule.Priority = name, 1<<30+i, 1000
		require.NoError(t, h.RuleAdd(rule))
	}
	made := nstest.Dump(t, ns)
	kept, err := h.LinkByName(cfg.Name)
	require.NoError(t, err)

	marked, err := ifname.Mark(ns)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{lost, cfg.Name}, marked)
	require.Equal(t, made, nstest.Dump(t, ns), "marking changes nothing of what the dump shows")
	adopted, err := vxlan.Adopt(ns, cfg)
	require.NoError(t, err)
	require.True(t, adopted)

	removed, err := ifname.SweepMarked(ns)
	require.NoError(t, err)
	require.Equal(t, []string{lost}, removed)
	after, err := h.LinkByName(cfg.Name)
	require.NoError(t, err)
	require.Equal(t, kept.Attrs().Index, after.Attrs().Index, "the adopted device is the one made before")
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	require.NoError(t, err)
	var named []string
	for _, r := range rules {
		if ifname.Ours(r.IifName) {
			named = append(named, r.IifName)
		}
	}
	require.Equal(t, []string{cfg.Name}, named, "the rule of the removed interface went, the adopted one's stayed")
}
