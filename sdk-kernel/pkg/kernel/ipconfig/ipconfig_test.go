package ipconfig_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	"vwire.dev/sdk-kernel/pkg/kernel/ipconfig"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// link makes namespace ns with an up veth "nsm-1" (its peer in another namespace).
func link(t *testing.T) netns.NsHandle {
	t.Helper()
	ns, _ := nstest.New(t)
	peer, _ := nstest.New(t)
	nstest.Veth(t, ns, "nsm-1", nil, peer, "peer", nil)
	return ns
}

func TestApplyRemove(t *testing.T) {
	tests := []struct {
		name string
		side ipconfig.Side
		ipc  *networkservice.IPContext
	}{
		{name: "client ipv4 point to point", side: ipconfig.Client, ipc: &networkservice.IPContext{
			SrcIpAddrs: []string{"172.16.1.1/32"}, DstIpAddrs: []string{"172.16.1.0/32"},
			SrcRoutes: []*networkservice.Route{{Prefix: "172.16.1.0/32"}, {Prefix: "10.96.0.0/12"}, {Prefix: "10.200.0.0/16", NextHop: "172.16.1.9"}},
			DstRoutes: []*networkservice.Route{{Prefix: "172.16.1.1/32"}},
		}},
		{name: "endpoint ipv6 subnet", side: ipconfig.Endpoint, ipc: &networkservice.IPContext{
			SrcIpAddrs: []string{"fd00:1::1/64"}, DstIpAddrs: []string{"fd00:1::2/64", "fd00:1::2/64"},
			SrcRoutes: []*networkservice.Route{{Prefix: "fd00:9::/64"}},
			DstRoutes: []*networkservice.Route{{Prefix: "fd00:1::/64"}, {Prefix: "fd00:2::/64"}, {Prefix: "fd00:2::/64", NextHop: "fd00:1::7"}},
			IpNeighbors: []*networkservice.IpNeighbor{
				{Ip: "fd00:1::1", HardwareAddress: "02:00:00:00:00:01"},
				{Ip: "fd00:1::2", HardwareAddress: "02:00:00:00:00:02"}, // its own: skipped
			},
		}},
		{name: "client dual stack policies", side: ipconfig.Client, ipc: &networkservice.IPContext{
			SrcIpAddrs: []string{"10.0.0.1/24", "fd00:3::1/64"}, DstIpAddrs: []string{"10.0.0.2/24", "fd00:3::2/64"},
			Policies: []*networkservice.PolicyRoute{
				{From: "10.0.0.0/24", Proto: "6", SrcPort: "1000-2000", Routes: []*networkservice.Route{{Prefix: "172.20.0.0/16", NextHop: "10.0.0.2"}}},
				{Proto: "udp", DstPort: "53", Routes: []*networkservice.Route{{Prefix: "fd00:53::/64"}}},
				{},
			},
		}},
		{name: "endpoint ignores policies", side: ipconfig.Endpoint, ipc: &networkservice.IPContext{
			SrcIpAddrs: []string{"10.0.0.1/24"}, DstIpAddrs: []string{"10.0.0.2/24"},
			Policies: []*networkservice.PolicyRoute{{Proto: "tcp"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := link(t)
			before := nstest.Dump(t, ns)

			require.NoError(t, ipconfig.Apply(ns, "nsm-1", tt.side, tt.ipc, "conn-1"))
			nstest.Golden(t, nstest.Dump(t, ns))
			require.NoError(t, ipconfig.Remove(ns, "nsm-1", tt.side, tt.ipc, "conn-1"))
			require.Equal(t, before, nstest.Dump(t, ns))
			require.NoError(t, ipconfig.Remove(ns, "nsm-1", tt.side, tt.ipc, "conn-1"), "removing what is gone succeeds")
		})
	}
}

// TestRemoveWithoutLink: rules outlive their interface, and Remove finds them from the IP
// context and the connection ID alone.
func TestRemoveWithoutLink(t *testing.T) {
	ns := link(t)
	before := nstest.Dump(t, ns)
	ipc := &networkservice.IPContext{
		SrcIpAddrs: []string{"10.0.0.1/24", "fd00::1/64"}, DstIpAddrs: []string{"10.0.0.2/24", "fd00::2/64"},
		Policies: []*networkservice.PolicyRoute{{Proto: "tcp", DstPort: "443"}},
	}
	require.NoError(t, ipconfig.Apply(ns, "nsm-1", ipconfig.Client, ipc, "conn-1"))
	h := nstest.Handle(t, ns)
	l, err := h.LinkByName("nsm-1")
	require.NoError(t, err)
	require.NoError(t, h.LinkDel(l))
	require.Contains(t, nstest.Dump(t, ns), "lookup", "the rules are still there")
	require.NoError(t, ipconfig.Remove(ns, "nsm-1", ipconfig.Client, ipc, "conn-1"))
	require.Equal(t, strings.Replace(before, "  nsm-1 veth up mtu 1500\n", "", 1), nstest.Dump(t, ns))
}

func TestApplyRefuses(t *testing.T) {
	tests := []struct {
		name string
		ipc  *networkservice.IPContext
		code codes.Code
		msg  string
	}{
		{name: "address without length", ipc: &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1"}},
			code: codes.InvalidArgument, msg: `ipconfig: ip_context.src_ip_addrs[0]: "10.0.0.1" is not an address with a prefix length (CIDR)`},
		{name: "next hop of another family", ipc: &networkservice.IPContext{DstRoutes: []*networkservice.Route{{Prefix: "fd00::/64", NextHop: "10.0.0.1"}}},
			code: codes.InvalidArgument, msg: "ipconfig: ip_context.dst_routes[0]: next hop 10.0.0.1 is not of the family of prefix fd00::/64"},
		{name: "unknown protocol", ipc: &networkservice.IPContext{Policies: []*networkservice.PolicyRoute{{Proto: "quic"}}},
			code: codes.InvalidArgument, msg: `ipconfig: ip_context.policies[0].proto: "quic" is not an IP protocol number 0..255 or tcp, udp, sctp, icmp, icmpv6`},
		{name: "policy route of another family", ipc: &networkservice.IPContext{Policies: []*networkservice.PolicyRoute{{Routes: []*networkservice.Route{{Prefix: "0.0.0.0/0", NextHop: "fd00::1"}}}}},
			code: codes.InvalidArgument, msg: "ipconfig: ip_context.policies[0].routes[0]: next hop fd00::1 is not of the family of prefix 0.0.0.0/0"},
		{name: "route the kernel refuses: next hop is our own address", ipc: &networkservice.IPContext{
			SrcIpAddrs: []string{"10.0.0.1/24", "fd00::1/64"}, DstIpAddrs: []string{"10.0.0.2/24"},
			SrcRoutes:   []*networkservice.Route{{Prefix: "192.168.0.0/16"}, {Prefix: "10.9.0.0/16", NextHop: "10.0.0.1"}},
			IpNeighbors: []*networkservice.IpNeighbor{{Ip: "10.0.0.2", HardwareAddress: "02:00:00:00:00:02"}},
			Policies:    []*networkservice.PolicyRoute{{Proto: "tcp"}},
		}, code: codes.InvalidArgument, msg: `ipconfig: add route 10.9.0.0/16 via 10.0.0.1 on "nsm-1": invalid argument`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := link(t)
			before := nstest.Dump(t, ns)

			err := ipconfig.Apply(ns, "nsm-1", ipconfig.Client, tt.ipc, "conn-1")
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.EqualError(t, err, tt.msg)
			require.Equal(t, before, nstest.Dump(t, ns), "nothing is left")
		})
	}
}

func TestTable(t *testing.T) {
	seen := map[int]bool{}
	for _, id := range []string{"conn-1", "conn-2", "a/b"} {
		for i := range 3 {
			table := ipconfig.Table(id, i)
			require.GreaterOrEqual(t, table, 1<<30)
			require.Less(t, table, 1<<31)
			require.Equal(t, table, ipconfig.Table(id, i), "the same connection and index give the same table")
			require.False(t, seen[table])
			seen[table] = true
		}
	}
	require.Equal(t, "client", ipconfig.Client.String())
	require.Equal(t, "endpoint", ipconfig.Endpoint.String())
}

func TestApplyNeedsTheLink(t *testing.T) {
	ns, _ := nstest.New(t)
	err := ipconfig.Apply(ns, "nsm-1", ipconfig.Client, &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1/24"}}, "conn-1")
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.ErrorContains(t, err, `ipconfig: no interface "nsm-1" in namespace`)
}

// TestApplyMakesNeighbourResolutionRetryFast: on the vWire, and only there, a lost first ARP
// request or neighbour solicitation is repeated after 100 ms, not a second.
func TestApplyMakesNeighbourResolutionRetryFast(t *testing.T) {
	ns := link(t)
	retrans := func(family, name string) string {
		var got []byte
		require.NoError(t, nsfile.Do(ns, func() error {
			var err error
			got, err = os.ReadFile("/proc/sys/net/" + family + "/neigh/" + name + "/retrans_time_ms")
			return err
		}))
		return strings.TrimSpace(string(got))
	}
	before := retrans("ipv4", "lo")
	ipc := &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.1/32", "fd00::1/128"}, DstIpAddrs: []string{"10.0.0.2/32", "fd00::2/128"}}
	require.NoError(t, ipconfig.Apply(ns, "nsm-1", ipconfig.Client, ipc, "conn-1"))
	require.Equal(t, strconv.Itoa(ipconfig.NeighbourRetransMillis), retrans("ipv4", "nsm-1"))
	require.Equal(t, strconv.Itoa(ipconfig.NeighbourRetransMillis), retrans("ipv6", "nsm-1"))
	require.Equal(t, before, retrans("ipv4", "lo"), "other interfaces keep theirs")
}
