package vxlan_test

import (
	"context"
	"net/netip"
	"strconv"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/vxlan"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	vxlanmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/vxlan"
	kvxlan "vwire.dev/sdk-kernel/pkg/kernel/vxlan"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nodes are two forwarders' namespaces joined by an underlay, with their addresses.
type nodes struct {
	a, b   netns.NsHandle
	ia, ib netip.Addr
}

func underlay(t *testing.T, a, b string) nodes {
	n := nodes{ia: netip.MustParsePrefix(a).Addr(), ib: netip.MustParsePrefix(b).Addr()}
	n.a, _ = nstest.New(t)
	n.b, _ = nstest.New(t)
	nstest.Veth(t, n.a, "ul0", []string{a}, n.b, "ul0", []string{b})
	return n
}

// pair is the client element in a's namespace sending to the server element in b's.
func pair(n nodes, rec *checks.Recorder, clientOpts, serverOpts []vxlanmech.Option) networkservice.NetworkServiceClient {
	server := next.NewNetworkServiceServer(metadata.NewServer(),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{vxlan.MECHANISM: vxlanmech.NewServer(n.b, n.ib, serverOpts...)}))
	return next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), vxlanmech.NewClient(n.a, n.ia, clientOpts...),
		adapters.NewServerToClient(rec), adapters.NewServerToClient(server))
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "ns", Payload: payload.Ethernet}}
}

// device is the VXLAN device of conn-1 in ns, made by the element of role.
func device(t *testing.T, ns netns.NsHandle, role string) *netlink.Vxlan {
	l, err := nstest.Handle(t, ns).LinkByName(ifname.Name("conn-1", role))
	require.NoError(t, err)
	v, ok := l.(*netlink.Vxlan)
	require.True(t, ok, "a VXLAN device")
	return v
}

func TestTunnel(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		mtu  int
	}{
		{"ipv4 underlay", "10.254.0.1/24", "10.254.0.2/24", 1450},
		{"ipv6 underlay", "fd00:254::1/64", "fd00:254::2/64", 1430},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := underlay(t, tt.a, tt.b)
			before := [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}
			rec := checks.NewServer()
			c := pair(n, rec, nil, nil)

			conn, err := c.Request(ctx, request())
			require.NoError(t, err)
			offer := vxlan.ToMechanism(rec.Requests()[0].GetMechanismPreferences()[0])
			require.Equal(t, cls.REMOTE, offer.GetCls())
			require.Equal(t, tt.a[:len(n.ia.String())], offer.SrcIP().String())
			require.Equal(t, "4789", offer.GetParameters()[vxlan.SrcPort])
			require.NotZero(t, offer.VNI(), "the client proposes a VNI")

			mech := vxlan.ToMechanism(conn.GetMechanism())
			require.NotNil(t, mech)
			require.Equal(t, n.ib.String(), mech.DstIP().String())
			require.Equal(t, offer.VNI(), mech.VNI(), "a VNI free on both nodes is kept")
			require.Equal(t, uint32(tt.mtu), conn.GetContext().GetMTU(), "the vWires get the tunnel's MTU")
			da, db := device(t, n.a, ifname.EndpointTunnel), device(t, n.b, ifname.ClientTunnel)
			require.Equal(t, int(mech.VNI()), da.VxlanId)
			require.Equal(t, da.VxlanId, db.VxlanId)
			require.Equal(t, n.ib.String(), da.Group.String(), "a's device sends to b")
			require.Equal(t, n.ia.String(), db.Group.String(), "b's device sends to a")
			require.Equal(t, tt.mtu, da.MTU)

			during := [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}
			refresh := request()
			refresh.Connection = conn.Clone()
			conn, err = c.Request(ctx, refresh)
			require.NoError(t, err)
			require.Equal(t, during, [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}, "a refresh keeps the devices")

			_, err = c.Close(ctx, conn)
			require.NoError(t, err)
			require.Equal(t, before, [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}, "nothing is left")
		})
	}
}

// server is the server element alone in b's namespace.
func server(n nodes, rec *checks.Recorder, opts ...vxlanmech.Option) networkservice.NetworkServiceServer {
	return next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{vxlan.MECHANISM: vxlanmech.NewServer(n.b, n.ib, opts...)}), rec)
}

func offered(src netip.Addr, vni uint32, port string) *networkservice.NetworkServiceRequest {
	m := vxlan.ToMechanism(&networkservice.Mechanism{Cls: cls.REMOTE, Type: vxlan.MECHANISM})
	m.SetSrcIP(src.AsSlice())
	m.SetVNI(vni)
	if port != "" {
		m.GetParameters()[vxlan.SrcPort] = port
	}
	req := request()
	req.MechanismPreferences = []*networkservice.Mechanism{m.Mechanism}
	return req
}

func TestServerPicksAnotherVNIWhenTaken(t *testing.T) {
	ctx := context.Background()
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	require.NoError(t, kvxlan.Create(n.b, kvxlan.Config{Name: "other0", VNI: 42, Local: n.ib, Remote: netip.MustParseAddr("10.254.0.9")}))
	s := server(n, checks.NewServer())
	conn, err := s.Request(ctx, offered(n.ia, 42, ""))
	require.NoError(t, err)
	vni := vxlan.ToMechanism(conn.GetMechanism()).VNI()
	require.NotEqual(t, uint32(42), vni, "Linux allows one device per VNI and port in a namespace")
	require.Equal(t, int(vni), device(t, n.b, ifname.ClientTunnel).VxlanId)
	_, err = s.Close(ctx, conn)
	require.NoError(t, err)
}

func TestServerRefuses(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	tests := []struct {
		name string
		req  *networkservice.NetworkServiceRequest
		opts []vxlanmech.Option
		code codes.Code
		want string
	}{
		{"no source address", offered(netip.Addr{}, 42, ""), nil, codes.InvalidArgument, "is not an IP address"},
		{"another family", offered(netip.MustParseAddr("fd00::1"), 42, ""), nil, codes.InvalidArgument, "different families"},
		{"another port", offered(n.ia, 42, "4789"), []vxlanmech.Option{vxlanmech.WithPort(8472)}, codes.FailedPrecondition,
			"the client's VXLAN port is 4789 and this forwarder's 8472"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := nstest.Dump(t, n.b)
			rec := checks.NewServer()
			_, err := server(n, rec, tt.opts...).Request(context.Background(), tt.req)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tt.want)
			require.Empty(t, rec.Requests(), "refused before next")
			require.Equal(t, before, nstest.Dump(t, n.b))
		})
	}
	t.Run("tunnel address on no interface", func(t *testing.T) {
		s := next.NewNetworkServiceServer(metadata.NewServer(), vxlanmech.NewServer(n.b, netip.MustParseAddr("10.254.0.77")))
		req := offered(n.ia, 42, "")
		req.Connection.Mechanism = req.GetMechanismPreferences()[0]
		_, err := s.Request(context.Background(), req)
		require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		require.Contains(t, err.Error(), "set NSM_TUNNEL_IP to one of its addresses")
	})
}

// answer stands for a server that answers with a fixed VNI.
type answer struct {
	dst netip.Addr
	vni uint32
}

func (a answer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	m := vxlan.ToMechanism(req.GetMechanismPreferences()[0].Clone())
	m.SetDstIP(a.dst.AsSlice())
	m.SetVNI(a.vni)
	conn.Mechanism = m.Mechanism
	return conn, nil
}

func (answer) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func TestClientRefusesAVNITakenOnItsNode(t *testing.T) {
	ctx := context.Background()
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	require.NoError(t, kvxlan.Create(n.a, kvxlan.Config{Name: "other0", VNI: 42, Local: n.ia, Remote: netip.MustParseAddr("10.254.0.9")}))
	before := nstest.Dump(t, n.a)
	rec := checks.NewServer()
	c := next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), vxlanmech.NewClient(n.a, n.ia),
		adapters.NewServerToClient(rec), adapters.NewServerToClient(answer{dst: n.ib, vni: 42}))
	_, err := c.Request(ctx, request())
	require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	require.Contains(t, err.Error(), "VNI 42 is taken on this node; retry")
	require.Len(t, rec.Closes(), 1, "what next made was closed")
	require.Equal(t, before, nstest.Dump(t, n.a))

	c = next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), vxlanmech.NewClient(n.a, n.ia),
		adapters.NewServerToClient(answer{dst: n.ib, vni: 43}))
	conn, err := c.Request(ctx, request())
	require.NoError(t, err, "a free VNI of the server's choice is taken")
	require.Equal(t, 43, device(t, n.a, ifname.EndpointTunnel).VxlanId)
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, nstest.Dump(t, n.a))
}

func TestServerConformance(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	conformance.Run(t, conformance.Case{
		Name:   "vxlan server",
		Server: func(context.Context) networkservice.NetworkServiceServer { return vxlanmech.NewServer(n.b, n.ib) },
		Request: func() *networkservice.NetworkServiceRequest {
			req := offered(n.ia, 42, strconv.Itoa(kvxlan.DefaultPort))
			req.Connection.Mechanism = req.GetMechanismPreferences()[0]
			return req
		},
	})
}

func TestClientConformance(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	conformance.Run(t, conformance.Case{
		Name:    "vxlan client",
		Client:  func(context.Context) networkservice.NetworkServiceClient { return vxlanmech.NewClient(n.a, n.ia) },
		Request: request,
	})
}

// TestLeftoverDeviceIsReplaced: a device of the connection's name that nothing keeps (left by
// an earlier try) does not stop the connection: the server replaces it.
func TestLeftoverDeviceIsReplaced(t *testing.T) {
	ctx := context.Background()
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	before := nstest.Dump(t, n.b)
	name := ifname.Name("conn-1", ifname.ClientTunnel)
	require.NoError(t, kvxlan.Create(n.b, kvxlan.Config{Name: name, VNI: 7, Local: n.ib, Remote: netip.MustParseAddr("10.254.0.9")}))
	s := server(n, checks.NewServer())
	conn, err := s.Request(ctx, offered(n.ia, 42, ""))
	require.NoError(t, err)
	require.Equal(t, n.ia.String(), device(t, n.b, ifname.ClientTunnel).Group.String(), "the device leads to the client now")
	_, err = s.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, nstest.Dump(t, n.b), "nothing is left")
}
