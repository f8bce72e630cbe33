package linkstats_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/tools/metrictest"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/linkstats"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ends stands for a forwarder's mechanism elements: it names the interfaces the test made as
// the connection's two ends.
type ends struct{ in, out string }

func (e ends) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	all := xconnect.FromContext(ctx)
	all.In, all.Out = &xconnect.End{Name: e.in}, &xconnect.End{Name: e.out}
	return next.Server(ctx).Request(ctx, req)
}

func (e ends) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// noIPv6 turns IPv6 off for the interfaces made later in ns, so that no neighbour discovery,
// router solicitation or multicast report adds to the packets a test counts.
func noIPv6(t *testing.T, ns netns.NsHandle) {
	require.NoError(t, nsfile.Do(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	}))
}

// neighbour gives ns a permanent entry for ip at mac on link, so that no ARP is sent.
func neighbour(t *testing.T, ns netns.NsHandle, link, ip string, mac net.HardwareAddr) {
	h := nstest.Handle(t, ns)
	l, err := h.LinkByName(link)
	require.NoError(t, err)
	require.NoError(t, h.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, IP: net.ParseIP(ip), HardwareAddr: mac,
		State: netlink.NUD_PERMANENT, Family: netlink.FAMILY_V4}))
}

func macOf(t *testing.T, ns netns.NsHandle, link string) net.HardwareAddr {
	l, err := nstest.Handle(t, ns).LinkByName(link)
	require.NoError(t, err)
	return l.Attrs().HardwareAddr
}

// TestCountsPingsAcrossAVWire: a client namespace and an endpoint namespace joined through a
// forwarder namespace (veth a0-f0, f1-b0, f0 and f1 cross-connected by xconnect), pinged n times:
// each forwarder end counts n echo requests one way and n replies the other, 47 bytes each.
func TestCountsPingsAcrossAVWire(t *testing.T) {
	nstest.RequireRoot(t)
	a, _ := nstest.New(t)
	f, _ := nstest.New(t)
	b, _ := nstest.New(t)
	for _, ns := range []netns.NsHandle{a, f, b} {
		noIPv6(t, ns)
	}
	nstest.Veth(t, a, "a0", []string{"10.9.0.1/24"}, f, "f0", nil)
	nstest.Veth(t, f, "f1", nil, b, "b0", []string{"10.9.0.2/24"})
	neighbour(t, a, "a0", "10.9.0.2", macOf(t, b, "b0"))
	neighbour(t, b, "b0", "10.9.0.1", macOf(t, a, "a0"))

	provider, reader := metrictest.Provider(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	chain := next.NewNetworkServiceServer(
		metadata.NewServer(),
		xconnect.NewServer(f),
		linkstats.NewServer(ctx, f, linkstats.WithMeterProvider(provider)),
		ends{in: "f0", out: "f1"},
	)
	conn, err := chain.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "blue"}})
	require.NoError(t, err)
	const frame = int64(14 + 20 + 8 + len("vwire")) // Ethernet, IPv4, ICMP echo, ping's payload
	// counted is what every end reports after pings pings: one echo request and one reply each.
	counted := func(pings int64) map[string]int64 {
		want := map[string]int64{}
		for _, e := range []struct{ iface, end string }{{"f0", "in"}, {"f1", "out"}} {
			for _, dir := range []string{"receive", "transmit"} {
				attrs := "{network.interface.name=" + e.iface + ",network.io.direction=" + dir +
					",nsm.connection.id=conn-1,nsm.network_service=blue,vwire.link.end=" + e.end + "}"
				want["vwire.link.packets"+attrs] = pings
				want["vwire.link.io"+attrs] = pings * frame
				want["vwire.link.dropped"+attrs] = 0
			}
		}
		return want
	}
	require.Equal(t, counted(0), metrictest.Collect(t, reader), "nothing crossed yet")

	const n = 5
	for range n {
		require.NoError(t, ping.Ping(a, netip.MustParseAddr("10.9.0.2")))
	}
	require.Equal(t, counted(n), metrictest.Collect(t, reader))

	_, err = chain.Close(ctx, conn)
	require.NoError(t, err)
	require.Empty(t, metrictest.Collect(t, reader), "a closed connection is no longer reported")
}
