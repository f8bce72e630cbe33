package xconnect_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk-kernel/pkg/kernel/veth"
	"vwire.dev/sdk-kernel/pkg/kernel/vxlan"
	"vwire.dev/sdk-kernel/pkg/kernel/xconnect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var dualStack = &networkservice.IPContext{
	SrcIpAddrs: []string{"172.16.1.1/32", "fd00:16::1/128"},
	DstIpAddrs: []string{"172.16.1.0/32", "fd00:16::/128"},
	SrcRoutes:  []*networkservice.Route{{Prefix: "172.16.1.0/32"}, {Prefix: "fd00:16::/128"}},
	DstRoutes:  []*networkservice.Route{{Prefix: "172.16.1.1/32"}, {Prefix: "fd00:16::1/128"}},
}

// wires makes the client's and the endpoint's vWires of one connection in forwarder namespace
// fwd and returns the names of their forwarder ends.
func wires(t *testing.T, fwd, client, endpoint netns.NsHandle, pl string) (string, string, func()) {
	t.Helper()
	eth := &networkservice.EthernetContext{SrcMac: "02:00:00:00:01:01", DstMac: "02:00:00:00:01:02"}
	specs := []veth.Spec{
		{ConnID: "conn-1-in", Name: "nsm-1", Side: ipconfig.Client, Payload: pl, IP: dualStack, Ethernet: eth},
		{ConnID: "conn-1-out", Name: "nsm-1", Side: ipconfig.Endpoint, Payload: pl, IP: dualStack, Ethernet: eth},
	}
	workloads := []netns.NsHandle{client, endpoint}
	var peers []string
	for i, s := range specs {
		peer, err := veth.Create(fwd, workloads[i], s)
		require.NoError(t, err)
		peers = append(peers, peer)
	}
	return peers[0], peers[1], func() {
		for i, s := range specs {
			require.NoError(t, veth.Delete(fwd, workloads[i], s))
		}
	}
}

func pingBothWays(t *testing.T, client, endpoint netns.NsHandle) {
	t.Helper()
	for _, dst := range []string{"172.16.1.0", "fd00:16::"} {
		require.NoError(t, ping.Ping(client, netip.MustParseAddr(dst)))
	}
	for _, dst := range []string{"172.16.1.1", "fd00:16::1"} {
		require.NoError(t, ping.Ping(endpoint, netip.MustParseAddr(dst)))
	}
}

// TestLocal is a forwarder's local case: client and endpoint on one node, their vWires
// cross-connected in the forwarder's namespace.
func TestLocal(t *testing.T) {
	for _, pl := range []string{payload.IP, payload.Ethernet} {
		t.Run(pl, func(t *testing.T) {
			client, _ := nstest.New(t)
			fwd, _ := nstest.New(t)
			endpoint, _ := nstest.New(t)
			empty := nstest.Dump(t, fwd)
			in, out, unwire := wires(t, fwd, client, endpoint, pl)
			wired := nstest.Dump(t, fwd)

			require.NoError(t, xconnect.Create(fwd, in, out))
			nstest.Golden(t, nstest.Dump(t, fwd))
			pingBothWays(t, client, endpoint)

			require.NoError(t, xconnect.Delete(fwd, in, out))
			require.Equal(t, wired, nstest.Dump(t, fwd))
			require.NoError(t, xconnect.Delete(fwd, in, out), "deleting what is gone succeeds")
			unwire()
			require.Equal(t, empty, nstest.Dump(t, fwd))
		})
	}
}

// TestRemoteVXLAN is the remote case: each forwarder cross-connects its workload's vWire with a
// VXLAN device to the other node.
func TestRemoteVXLAN(t *testing.T) {
	for _, underlay := range [][2]netip.Prefix{
		{netip.MustParsePrefix("10.254.0.1/24"), netip.MustParsePrefix("10.254.0.2/24")},
		{netip.MustParsePrefix("fd00:254::1/64"), netip.MustParsePrefix("fd00:254::2/64")},
	} {
		t.Run(underlay[0].String(), func(t *testing.T) {
			client, _ := nstest.New(t)
			fwds := [2]netns.NsHandle{}
			fwds[0], _ = nstest.New(t)
			fwds[1], _ = nstest.New(t)
			endpoint, _ := nstest.New(t)
			nstest.Veth(t, fwds[0], "ul0", []string{underlay[0].String()}, fwds[1], "ul0", []string{underlay[1].String()})

			specs := [2]veth.Spec{
				{ConnID: "conn-1-node1", Name: "nsm-1", Side: ipconfig.Client, IP: dualStack},
				{ConnID: "conn-1-node2", Name: "nsm-1", Side: ipconfig.Endpoint, IP: dualStack},
			}
			for i, workload := range [2]netns.NsHandle{client, endpoint} {
				peer, err := veth.Create(fwds[i], workload, specs[i])
				require.NoError(t, err)
				require.NoError(t, vxlan.Create(fwds[i], vxlan.Config{
					Name: "vx-1", VNI: 1, Local: underlay[i].Addr(), Remote: underlay[1-i].Addr(),
				}))
				require.NoError(t, xconnect.Create(fwds[i], peer, "vx-1"))
			}
			pingBothWays(t, client, endpoint)
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	fwd, _ := nstest.New(t)
	other, _ := nstest.New(t)
	nstest.Veth(t, fwd, "a", nil, other, "a", nil)
	nstest.Veth(t, fwd, "b", nil, other, "b", nil)
	nstest.Veth(t, fwd, "taken", nil, other, "taken", nil)
	h := nstest.Handle(t, fwd)
	taken, err := h.LinkByName("taken")
	require.NoError(t, err)
	require.NoError(t, h.QdiscAdd(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: taken.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
	}}))
	require.NoError(t, nsfile.Do(fwd, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, Mode: netlink.TUNTAP_MODE_TUN})
	}))
	before := nstest.Dump(t, fwd)

	tests := []struct {
		name string
		a, b string
		code codes.Code
		msg  string
	}{
		{name: "itself", a: "a", b: "a", code: codes.InvalidArgument, msg: `xconnect: cannot connect "a" to itself`},
		{name: "missing", a: "a", b: "nsm-9", code: codes.NotFound, msg: `xconnect: find "nsm-9": Link not found`},
		{name: "ethernet to ip", a: "a", b: "tun0", code: codes.FailedPrecondition,
			msg: `xconnect: "a" carries Ethernet frames and "tun0" carries bare IP packets (none); a redirect cannot join them, route between them instead`},
		{name: "ingress qdisc taken", a: "b", b: "taken", code: codes.AlreadyExists,
			msg: `xconnect: "taken" has an ingress qdisc already; remove it or cross-connect another interface`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := xconnect.Create(fwd, tt.a, tt.b)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.EqualError(t, err, tt.msg)
			require.Equal(t, before, nstest.Dump(t, fwd))
		})
	}
}

// TestAdopt: Adopt finds a join Create made, between those two interfaces only, and changes
// nothing either way.
func TestAdopt(t *testing.T) {
	fwd, _ := nstest.New(t)
	other, _ := nstest.New(t)
	for _, name := range []string{"a", "b", "c"} {
		nstest.Veth(t, fwd, name, nil, other, name, nil)
	}
	kept, err := xconnect.Adopt(fwd, "a", "b")
	require.NoError(t, err)
	require.False(t, kept, "nothing joins them yet")
	require.NoError(t, xconnect.Create(fwd, "a", "b"))
	joined := nstest.Dump(t, fwd)
	for _, tt := range []struct {
		a, b string
		keep bool
	}{{"a", "b", true}, {"b", "a", true}, {"a", "c", false}, {"a", "gone", false}} {
		kept, err := xconnect.Adopt(fwd, tt.a, tt.b)
		require.NoError(t, err)
		require.Equal(t, tt.keep, kept, "%s-%s", tt.a, tt.b)
		require.Equal(t, joined, nstest.Dump(t, fwd), "Adopt touches nothing")
	}
	require.NoError(t, xconnect.Delete(fwd, "a", "b"))
}
