package strictipam_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk/pkg/networkservice/ipam/groupipam"
	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipamtest"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/ipam/strictipam"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// foreign is the IP context of a client that comes from an endpoint of other addresses.
func foreign() *networkservice.IPContext {
	return &networkservice.IPContext{
		SrcIpAddrs: []string{"192.168.9.2/32"}, DstIpAddrs: []string{"192.168.9.1/32"},
		SrcRoutes: []*networkservice.Route{{Prefix: "192.168.9.1/32"}, {Prefix: "8.8.8.0/24"}},
		DstRoutes: []*networkservice.Route{{Prefix: "192.168.9.2/32"}},
	}
}

// TestForeignAddressesAreReplaced: without strictipam a client keeps its foreign addresses
// beside the new ones; with it they and their host routes are gone, other routes stay.
func TestForeignAddressesAreReplaced(t *testing.T) {
	prefix := netip.MustParsePrefix("10.0.0.0/24")
	polite, err := ipamtest.NewEnv(point2pointipam.NewServer(prefix)).Request("a", foreign())
	require.NoError(t, err)
	require.Contains(t, polite.GetContext().GetIpContext().GetSrcIpAddrs(), "192.168.9.2/32")

	conn, err := ipamtest.NewEnv(strictipam.NewServer(point2pointipam.NewServer, prefix)).Request("a", foreign())
	require.NoError(t, err)
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"10.0.0.2/32"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.0.0.1/32"}, ipc.GetDstIpAddrs())
	var src []string
	for _, r := range ipc.GetSrcRoutes() {
		src = append(src, r.GetPrefix())
	}
	require.ElementsMatch(t, []string{"8.8.8.0/24", "10.0.0.1/32"}, src)
	require.Len(t, ipc.GetDstRoutes(), 1)
}

// TestOwnAddressesStayAndBadOnesReachTheIPAM: an address of the prefixes is kept (and the IPAM
// gives it back when free), one that does not parse is left for the IPAM to refuse.
func TestOwnAddressesStayAndBadOnesReachTheIPAM(t *testing.T) {
	prefix := netip.MustParsePrefix("10.0.0.0/24")
	e := ipamtest.NewEnv(strictipam.NewServer(point2pointipam.NewServer, prefix))
	conn, err := e.Request("a", &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.7/32"}})
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.7/32"}, conn.GetContext().GetIpContext().GetSrcIpAddrs())
	_, err = e.Request("b", &networkservice.IPContext{SrcIpAddrs: []string{"not-an-address"}})
	ipamtest.RequireCode(t, err, codes.InvalidArgument, "src_ip_addrs")
}

// TestAroundGroups: NSM's strict policy over groups, as its icmp-responder builds it.
func TestAroundGroups(t *testing.T) {
	groups := [][]netip.Prefix{ipamtest.Prefixes("10.0.0.0/24"), ipamtest.Prefixes("172.16.0.0/24")}
	all := append(append([]netip.Prefix(nil), groups[0]...), groups[1]...)
	e := ipamtest.NewEnv(strictipam.NewServer(func(...netip.Prefix) networkservice.NetworkServiceServer {
		return groupipam.NewServer(groups)
	}, all...))
	conn, err := e.Request("a", foreign())
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.2/32", "172.16.0.2/32"}, conn.GetContext().GetIpContext().GetSrcIpAddrs())
	require.Panics(t, func() { strictipam.NewServer(nil, all...) })
}
