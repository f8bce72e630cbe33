package xconnect_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
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

	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	kernelmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/kernel"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanismtranslation"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/xconnect"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	"vwire.dev/sdk-kernel/pkg/kernel/ping"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// endpoint stands for a local endpoint: it takes the KERNEL preference and states its namespace.
type endpoint string

func (e endpoint) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	if conn.GetMechanism() == nil {
		conn.Mechanism = req.GetMechanismPreferences()[len(req.GetMechanismPreferences())-1].Clone()
	}
	kernel.ToMechanism(conn.GetMechanism()).SetNetNSURL(string(e))
	return conn, nil
}

func (endpoint) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// paths lets these tests name namespaces by path: there is no gRPC to pass descriptors over.
var paths = kernelmech.WithNetNSPaths()

// forwarder is a forwarder's chain without gRPC: xconnect, the client's KERNEL, then a client
// chain with the endpoint's KERNEL, a recorder, extra elements, and the next hop (last).
func forwarder(fwd netns.NsHandle, rec *checks.Recorder, last networkservice.NetworkServiceServer, extra ...networkservice.NetworkServiceServer) networkservice.NetworkServiceServer {
	var clients []networkservice.NetworkServiceClient
	for _, e := range append(append([]networkservice.NetworkServiceServer{rec}, extra...), last) {
		clients = append(clients, adapters.NewServerToClient(e))
	}
	nextHop := next.NewNetworkServiceClient(append([]networkservice.NetworkServiceClient{
		begin.NewClient(), metadata.NewClient(), mechanismtranslation.NewClient(), kernelmech.NewClient(fwd, paths),
	}, clients...)...)
	return next.NewNetworkServiceServer(
		begin.NewServer(), metadata.NewServer(),
		xconnect.NewServer(fwd),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(fwd, paths)}),
		adapters.NewClientToServer(nextHop),
	)
}

func request(nscURL, p string) *networkservice.NetworkServiceRequest {
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetNetNSURL(nscURL)
	mech.SetInterfaceName("nsm-1")
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "icmp-responder", Payload: p,
			Context: &networkservice.ConnectionContext{IpContext: &networkservice.IPContext{
				SrcIpAddrs: []string{"172.16.0.1/32", "fd16::1/128"}, DstIpAddrs: []string{"172.16.0.0/32", "fd16::/128"},
				SrcRoutes: []*networkservice.Route{{Prefix: "172.16.0.0/32"}, {Prefix: "fd16::/128"}},
				DstRoutes: []*networkservice.Route{{Prefix: "172.16.0.1/32"}, {Prefix: "fd16::1/128"}},
			}}},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	}
}

type spaces struct {
	fwd, nsc, nse netns.NsHandle
	nscURL        string
	nseURL        string
}

func namespaces(t *testing.T) spaces {
	var s spaces
	var nsc, nse string
	s.fwd, _ = nstest.New(t)
	s.nsc, nsc = nstest.New(t)
	s.nse, nse = nstest.New(t)
	s.nscURL, s.nseURL = nstest.URL(nsc), nstest.URL(nse)
	return s
}

func (s spaces) dump(t *testing.T) [3]string {
	return [3]string{nstest.Dump(t, s.fwd), nstest.Dump(t, s.nsc), nstest.Dump(t, s.nse)}
}

// TestKernel2Kernel joins a client's and an endpoint's vWire with tc and pings across, for IP
// and ETHERNET payload.
func TestKernel2Kernel(t *testing.T) {
	for _, p := range []string{payload.IP, payload.Ethernet} {
		t.Run(p, func(t *testing.T) {
			ctx := context.Background()
			s := namespaces(t)
			before := s.dump(t)
			rec := checks.NewServer()
			fwd := forwarder(s.fwd, rec, endpoint(s.nseURL))

			conn, err := fwd.Request(ctx, request(s.nscURL, p))
			require.NoError(t, err)
			nstest.Golden(t, nstest.Dump(t, s.fwd))
			for _, hop := range []struct {
				from netns.NsHandle
				to   string
			}{{s.nsc, "172.16.0.0"}, {s.nsc, "fd16::"}, {s.nse, "172.16.0.1"}, {s.nse, "fd16::1"}} {
				require.NoError(t, ping.Ping(hop.from, netip.MustParseAddr(hop.to)))
			}

			refresh := request(s.nscURL, p)
			refresh.Connection = conn.Clone()
			during := s.dump(t)
			conn, err = fwd.Request(ctx, refresh)
			require.NoError(t, err)
			require.Equal(t, during, s.dump(t), "a refresh keeps the join")

			_, err = fwd.Close(ctx, conn)
			require.NoError(t, err)
			require.Equal(t, before, s.dump(t), "nothing is left")
		})
	}
}

// remote stands for another node's forwarder: it chooses a tunnel.
type remote struct{}

func (remote) Request(_ context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn := req.GetConnection().Clone()
	conn.Mechanism = &networkservice.Mechanism{Cls: cls.REMOTE, Type: "WIREGUARD"}
	return conn, nil
}

func (remote) Close(context.Context, *networkservice.Connection) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// tunOut stands for a tunnel element of the client side: after next it makes a TUN device and
// puts it in Ends.Out (or, with name set, an end of that name that it does not make).
type tunOut struct {
	fwd  netns.NsHandle
	name string
}

func (o tunOut) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	end := &xconnect.End{Name: o.name, L3: true}
	if o.name == "" {
		end.Name = "tun0"
		err := nsfile.Do(o.fwd, func() error {
			if _, err := netlink.LinkByName("tun0"); err == nil {
				return nil // a refresh
			}
			tun := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, Mode: netlink.TUNTAP_MODE_TUN}
			if err := netlink.LinkAdd(tun); err != nil {
				return err
			}
			return netlink.LinkSetUp(tun)
		})
		if err != nil {
			return nil, err
		}
	}
	xconnect.FromContext(ctx).Out = end
	return conn, nil
}

func (o tunOut) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	xconnect.FromContext(ctx).Out = nil
	_ = nsfile.Do(o.fwd, func() error {
		l, err := netlink.LinkByName("tun0")
		if err == nil {
			err = netlink.LinkDel(l)
		}
		return err
	})
	return next.Server(ctx).Close(ctx, conn)
}

// TestRoutesToAnL3End: a vWire and a TUN device are joined by routing (l3xconnect).
func TestRoutesToAnL3End(t *testing.T) {
	ctx := context.Background()
	s := namespaces(t)
	h := nstest.Handle(t, s.fwd)
	lo, err := h.LinkByName("lo")
	require.NoError(t, err)
	require.NoError(t, h.LinkSetUp(lo))
	before := s.dump(t)
	rec := checks.NewServer()
	fwd := forwarder(s.fwd, rec, remote{}, tunOut{fwd: s.fwd})
	req := request(s.nscURL, payload.IP)
	conn, err := fwd.Request(ctx, req)
	require.NoError(t, err)
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	require.NoError(t, err)
	var iifs []string
	for _, r := range rules {
		if r.IifName != "" {
			iifs = append(iifs, r.IifName)
		}
	}
	require.Contains(t, iifs, "tun0", "what comes out of the tunnel is routed")
	require.Len(t, iifs, 4, "both ways, both families")

	_, err = fwd.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, s.dump(t), "nothing is left")
}

func TestJoinFailureUndoes(t *testing.T) {
	tests := []struct {
		name  string
		extra []networkservice.NetworkServiceServer
		code  codes.Code
	}{
		{"the other end is missing", nil, codes.Internal},
		{"the other end is not there", []networkservice.NetworkServiceServer{tunOut{name: "gone0"}}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := namespaces(t)
			before := s.dump(t)
			rec := checks.NewServer()
			// Without the endpoint's KERNEL answer, the client side makes no end at all.
			fwd := next.NewNetworkServiceServer(
				begin.NewServer(), metadata.NewServer(),
				xconnect.NewServer(s.fwd),
				mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: kernelmech.NewServer(s.fwd, paths)}),
				next.NewNetworkServiceServer(tt.extra...),
				rec,
			)
			_, err := fwd.Request(ctx, request(s.nscURL, payload.IP))
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), "xconnect:")
			require.Len(t, rec.Closes(), 1, "what next made was closed")
			require.Equal(t, before, s.dump(t), "nothing is left")
		})
	}
}
