package groupipam_test

import (
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"vwire.dev/sdk/pkg/networkservice/ipam/groupipam"
	"vwire.dev/sdk/pkg/networkservice/ipam/internal/ipamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var groups = [][]string{{"10.0.0.0/30", "fd00::/126"}, {"172.16.0.0/30"}}

func newEnv() *ipamtest.Env {
	return ipamtest.NewEnv(groupipam.NewServer([][]netip.Prefix{ipamtest.Prefixes(groups[0]...), ipamtest.Prefixes(groups[1]...)}))
}

// TestALinkPerGroupAndFamily: each connection gets a link from every group and family; a
// refresh keeps them; a group that is full fails the Request with ResourceExhausted and takes
// nothing from the others; Close gives every group's addresses back.
func TestALinkPerGroupAndFamily(t *testing.T) {
	e := newEnv()
	conn, err := e.Request("a", &networkservice.IPContext{})
	require.NoError(t, err)
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"10.0.0.2/32", "fd00::2/128", "172.16.0.2/32"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.0.0.1/32", "fd00::1/128", "172.16.0.1/32"}, ipc.GetDstIpAddrs())
	require.Len(t, ipc.GetSrcRoutes(), 3)

	again, err := e.Refresh(conn, nil)
	require.NoError(t, err)
	require.Equal(t, ipc.GetSrcIpAddrs(), again.GetContext().GetIpContext().GetSrcIpAddrs())

	_, err = e.Request("b", &networkservice.IPContext{}) // a /30 holds one pair
	ipamtest.RequireCode(t, err, codes.ResourceExhausted, "10.0.0.0/30")

	e.Close(t, again)
	conn, err = e.Request("c", &networkservice.IPContext{})
	require.NoError(t, err)
	require.Equal(t, ipc.GetSrcIpAddrs(), conn.GetContext().GetIpContext().GetSrcIpAddrs(), "every group's addresses came back")
}

// TestAClientKeepsItsAddressesInEveryGroup: a client that comes back to a restarted endpoint
// with its addresses of both IPv4 groups keeps each (every group finds its own).
func TestAClientKeepsItsAddressesInEveryGroup(t *testing.T) {
	e := newEnv()
	conn, err := e.Request("a", &networkservice.IPContext{
		SrcIpAddrs: []string{"10.0.0.1/32", "172.16.0.1/32"}, DstIpAddrs: []string{"10.0.0.2/32", "172.16.0.2/32"},
	})
	require.NoError(t, err)
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"10.0.0.1/32", "172.16.0.1/32", "fd00::2/128"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.0.0.2/32", "172.16.0.2/32", "fd00::1/128"}, ipc.GetDstIpAddrs())
}

// TestAnAddressRequiredInOneGroup: a client that requires its address of the second group keeps
// it; the first group, which does not hold it, gives its own link instead of refusing it.
func TestAnAddressRequiredInOneGroup(t *testing.T) {
	e := newEnv()
	conn, err := e.Request("a", &networkservice.IPContext{SrcIpAddrs: []string{"172.16.0.1/32"}, SrcIpRequired: true})
	require.NoError(t, err)
	ipc := conn.GetContext().GetIpContext()
	require.Equal(t, []string{"172.16.0.1/32", "10.0.0.2/32", "fd00::2/128"}, ipc.GetSrcIpAddrs())
	require.Equal(t, []string{"10.0.0.1/32", "fd00::1/128", "172.16.0.2/32"}, ipc.GetDstIpAddrs())

	_, err = e.Request("b", &networkservice.IPContext{SrcIpAddrs: []string{"10.9.9.9/32"}, SrcIpRequired: true})
	ipamtest.RequireCode(t, err, codes.FailedPrecondition, "10.9.9.9/32", "src_ip_required")
}

func TestOverlappingGroupsPanic(t *testing.T) {
	ipamtest.RequirePanic(t, func() {
		groupipam.NewServer([][]netip.Prefix{ipamtest.Prefixes("10.0.0.0/24"), ipamtest.Prefixes("10.0.0.128/25")})
	}, "group 1", "10.0.0.128/25")
}
