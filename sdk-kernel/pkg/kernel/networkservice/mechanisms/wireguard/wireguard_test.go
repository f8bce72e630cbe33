package wireguard_test

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/wireguard"
	"github.com/networkservicemesh/api/pkg/api/networkservice/payload"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/internal/nstest"
	wgmech "vwire.dev/sdk-kernel/pkg/kernel/networkservice/mechanisms/wireguard"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
	kwireguard "vwire.dev/sdk-kernel/pkg/kernel/wireguard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nodes struct {
	a, b   netns.NsHandle
	ia, ib netip.Addr
	ka, kb wgtypes.Key
}

func underlay(t *testing.T, a, b string) nodes {
	n := nodes{ia: netip.MustParsePrefix(a).Addr(), ib: netip.MustParsePrefix(b).Addr()}
	n.a, _ = nstest.New(t)
	n.b, _ = nstest.New(t)
	nstest.Veth(t, n.a, "ul0", []string{a}, n.b, "ul0", []string{b})
	var err error
	n.ka, err = wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	n.kb, err = wgtypes.GeneratePrivateKey()
	require.NoError(t, err)
	return n
}

// id is the connection ID of a test: WireGuard interfaces are named from it, and their UAPI
// sockets share one directory across namespaces, so parallel runs must not meet.
func id(t *testing.T) string { return nstest.Name("conn-", 12) }

func pair(n nodes, rec *checks.Recorder) networkservice.NetworkServiceClient {
	server := next.NewNetworkServiceServer(metadata.NewServer(),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{wireguard.MECHANISM: wgmech.NewServer(n.b, n.ib, n.kb)}))
	return next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), wgmech.NewClient(n.a, n.ia, n.ka),
		adapters.NewServerToClient(rec), adapters.NewServerToClient(server))
}

func request(connID, p string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: connID, NetworkService: "ns", Payload: p}}
}

// state reads the WireGuard interface of connID in ns.
func state(t *testing.T, ns netns.NsHandle, connID, role string) *wgtypes.Device {
	var dev *wgtypes.Device
	require.NoError(t, nsfile.Do(ns, func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		dev, err = c.Device(ifname.Name(connID, role))
		return err
	}))
	return dev
}

func TestTunnel(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"ipv4 underlay", "10.254.0.1/24", "10.254.0.2/24"},
		{"ipv6 underlay", "fd00:254::1/64", "fd00:254::2/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := underlay(t, tt.a, tt.b)
			before := [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}
			rec := checks.NewServer()
			c := pair(n, rec)
			connID := id(t)

			conn, err := c.Request(ctx, request(connID, payload.IP))
			require.NoError(t, err)
			offer := wireguard.ToMechanism(rec.Requests()[0].GetMechanismPreferences()[0])
			require.Equal(t, cls.REMOTE, offer.GetCls())
			require.Equal(t, n.ka.PublicKey().String(), offer.SrcPublicKey())
			require.Equal(t, n.ia.String(), offer.SrcIP().String())

			mech := wireguard.ToMechanism(conn.GetMechanism())
			require.Equal(t, n.kb.PublicKey().String(), mech.DstPublicKey())
			require.Equal(t, n.ib.String(), mech.DstIP().String())
			require.NotZero(t, mech.DstPort())
			require.NotZero(t, mech.SrcPort(), "the client tells its port")
			require.Equal(t, uint32(kwireguard.DefaultMTU), conn.GetContext().GetMTU())

			sa, sb := state(t, n.a, connID, ifname.EndpointTunnel), state(t, n.b, connID, ifname.ClientTunnel)
			require.Equal(t, int(mech.SrcPort()), sa.ListenPort)
			require.Equal(t, int(mech.DstPort()), sb.ListenPort)
			require.Len(t, sa.Peers, 1)
			require.Equal(t, n.kb.PublicKey(), sa.Peers[0].PublicKey)
			require.Equal(t, wgmech.Keepalive, sa.Peers[0].PersistentKeepaliveInterval)
			require.Len(t, sa.Peers[0].AllowedIPs, 2, "everything, both families")
			// The keepalive starts the handshake; the server learns the client's endpoint from it.
			require.Eventually(t, func() bool {
				peers := state(t, n.b, connID, ifname.ClientTunnel).Peers
				return len(peers) == 1 && peers[0].Endpoint != nil && !peers[0].LastHandshakeTime.IsZero()
			}, 5*time.Second, 10*time.Millisecond, "the handshake happened")
			require.Equal(t, int(mech.SrcPort()), state(t, n.b, connID, ifname.ClientTunnel).Peers[0].Endpoint.Port)

			refresh := request(connID, payload.IP)
			refresh.Connection = conn.Clone()
			again, err := c.Request(ctx, refresh)
			require.NoError(t, err)
			require.Equal(t, mech.DstPort(), wireguard.ToMechanism(again.GetMechanism()).DstPort(), "a refresh keeps the interfaces")

			_, err = c.Close(ctx, again)
			require.NoError(t, err)
			require.Equal(t, before, [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}, "nothing is left")
			for _, role := range []string{ifname.ClientTunnel, ifname.EndpointTunnel} {
				_, err = os.Stat(kwireguard.SocketPath(ifname.Name(connID, role)))
				require.ErrorIs(t, err, os.ErrNotExist, "no UAPI socket is left")
			}
		})
	}
}

func TestNoOfferForEthernet(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	rec := checks.NewServer()
	c := next.NewNetworkServiceClient(begin.NewClient(), metadata.NewClient(), wgmech.NewClient(n.a, n.ia, n.ka), adapters.NewServerToClient(rec))
	conn, err := c.Request(context.Background(), request(id(t), payload.Ethernet))
	require.NoError(t, err)
	require.Empty(t, rec.Requests()[0].GetMechanismPreferences(), "WireGuard carries no Ethernet")
	_, err = c.Close(context.Background(), conn)
	require.NoError(t, err)
}

func offered(n nodes, src netip.Addr, key, p string) *networkservice.NetworkServiceRequest {
	m := wireguard.ToMechanism(&networkservice.Mechanism{Cls: cls.REMOTE, Type: wireguard.MECHANISM})
	if src.IsValid() {
		m.SetSrcIP(src.AsSlice())
	}
	m.SetSrcPublicKey(key)
	req := request("conn-refused", p)
	req.Connection.Mechanism = m.Mechanism
	return req
}

func TestServerRefuses(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	key := n.ka.PublicKey().String()
	tests := []struct {
		name string
		req  *networkservice.NetworkServiceRequest
		code codes.Code
		want string
	}{
		{"ethernet", offered(n, n.ia, key, payload.Ethernet), codes.InvalidArgument, "a service of ETHERNET payload needs VXLAN"},
		{"no source address", offered(n, netip.Addr{}, key, payload.IP), codes.InvalidArgument, "is not an IP address"},
		{"another family", offered(n, netip.MustParseAddr("fd00::1"), key, payload.IP), codes.InvalidArgument, "different families"},
		{"bad key", offered(n, n.ia, "not-a-key", payload.IP), codes.InvalidArgument, "is not a WireGuard key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := checks.NewServer()
			s := next.NewNetworkServiceServer(metadata.NewServer(), wgmech.NewServer(n.b, n.ib, n.kb), rec)
			before := nstest.Dump(t, n.b)
			_, err := s.Request(context.Background(), tt.req)
			require.Equal(t, tt.code, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tt.want)
			require.Empty(t, rec.Requests())
			require.Equal(t, before, nstest.Dump(t, n.b))
		})
	}
}

func TestServerConformance(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	connID := id(t)
	conformance.Run(t, conformance.Case{
		Name:   "wireguard server",
		Server: func(context.Context) networkservice.NetworkServiceServer { return wgmech.NewServer(n.b, n.ib, n.kb) },
		Request: func() *networkservice.NetworkServiceRequest {
			req := offered(n, n.ia, n.ka.PublicKey().String(), payload.IP)
			req.Connection.Id = connID
			return req
		},
	})
}

func TestClientConformance(t *testing.T) {
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	conformance.Run(t, conformance.Case{
		Name:    "wireguard client",
		Client:  func(context.Context) networkservice.NetworkServiceClient { return wgmech.NewClient(n.a, n.ia, n.ka) },
		Request: func() *networkservice.NetworkServiceRequest { return request(id(t), payload.IP) },
	})
}

// TestLeftoverInterfaceIsReplaced: an interface of the connection's name that nothing keeps
// (left by an earlier try) does not stop the connection: the server replaces it, and Close
// leaves nothing.
func TestLeftoverInterfaceIsReplaced(t *testing.T) {
	ctx := context.Background()
	n := underlay(t, "10.254.0.1/24", "10.254.0.2/24")
	before := [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}
	connID := id(t)
	leftover, err := kwireguard.New(n.b, ifname.Name(connID, ifname.ClientTunnel), kwireguard.WithUserspace())
	require.NoError(t, err)
	t.Cleanup(func() { _ = leftover.Close() })

	c := pair(n, checks.NewServer())
	conn, err := c.Request(ctx, request(connID, payload.IP))
	require.NoError(t, err)
	require.Equal(t, n.ka.PublicKey(), state(t, n.b, connID, ifname.ClientTunnel).Peers[0].PublicKey, "the new interface has the client as its peer")
	_, err = c.Close(ctx, conn)
	require.NoError(t, err)
	require.Equal(t, before, [2]string{nstest.Dump(t, n.a), nstest.Dump(t, n.b)}, "nothing is left")
}
