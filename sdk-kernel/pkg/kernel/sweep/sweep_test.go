package sweep_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/sweep"
	"vwire.dev/sdk-kernel/pkg/kernel/vxlan"
	"vwire.dev/sdk-kernel/pkg/kernel/xconnect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestForwarderLeavesOnlyWhatIsNotTheForwarders leaves in a namespace what a dead forwarder
// made (a vWire whose workload end is in another namespace, a VXLAN device cross-connected with
// it, a policy rule, its listening socket) beside what is not its own (an interface, a rule, a
// socket something listens on), and checks that Forwarder removes exactly the former.
func TestForwarderLeavesOnlyWhatIsNotTheForwarders(t *testing.T) {
	fwd, _ := nstest.New(t)
	workload, _ := nstest.New(t)
	h := nstest.Handle(t, fwd)
	before := [2]string{nstest.Dump(t, fwd), nstest.Dump(t, workload)}

	end, tunnel := ifname.Name("c", ifname.Client), ifname.Name("c", ifname.EndpointTunnel)
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: end}, PeerName: "nsm-1", PeerNamespace: netlink.NsFd(workload)}))
	link, err := h.LinkByName(end)
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(link))
	require.NoError(t, vxlan.Create(fwd, vxlan.Config{Name: tunnel, VNI: 9, Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("10.0.0.2")}))
	require.NoError(t, xconnect.Create(fwd, end, tunnel))
	rule := netlink.NewRule()
	rule.IifName, rule.Table, rule.Priority = end, 1<<30+5, 1000
	require.NoError(t, h.RuleAdd(rule))
	require.NoError(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}, PeerName: "keep1"}))
	keep := netlink.NewRule()
	keep.IifName, keep.Table, keep.Priority = "keep0", 77, 1000
	require.NoError(t, h.RuleAdd(keep))

	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	dead, live := filepath.Join(dir, "dead.sock"), filepath.Join(dir, "live.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false) // as a process that died leaves it
	require.NoError(t, l.Close())
	l, err = net.ListenUnix("unix", &net.UnixAddr{Name: live, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })

	removed, err := sweep.Forwarder(fwd, dead, live, filepath.Join(dir, "never.sock"))
	require.NoError(t, err)
	want := []string{end, tunnel}
	slices.Sort(want)
	require.Equal(t, want, removed.Interfaces)
	// WireGuard's UAPI sockets are the machine's (/var/run/wireguard): another package's test
	// may have left one of a device it is removing at this moment. Judge only this test's own.
	mine := slices.DeleteFunc(removed.Sockets, func(path string) bool { return filepath.Dir(path) != dir })
	require.Equal(t, []string{dead}, mine, "only the socket nothing listens on")
	require.FileExists(t, live)

	require.NoError(t, h.RuleDel(keep))
	require.NoError(t, h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "keep0"}}))
	require.Equal(t, before, [2]string{nstest.Dump(t, fwd), nstest.Dump(t, workload)}, "the forwarder's interfaces, filters and rules are gone, with the workload's ends, and only they")

	again, err := sweep.Forwarder(fwd, dead)
	require.NoError(t, err)
	require.Empty(t, again.Interfaces, "a second sweep finds nothing")
	require.NotContains(t, again.Sockets, dead)
}
