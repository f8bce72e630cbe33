package main

import (
	"context"
	"net/netip"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/chains/nsmgr"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/token"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
)

// netnsOf states the endpoint's namespace in the KERNEL mechanism it accepts.
type netnsOf string

func (n netnsOf) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	kernel.ToMechanism(req.GetConnection().GetMechanism()).SetNetNSURL(string(n))
	return next.Server(ctx).Request(ctx, req)
}

func (n netnsOf) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// TestServesAConnectionAndLeavesNothing runs the binary in a namespace of its own as the
// forwarder of an in-process nsmgr, an endpoint and a client, each workload in a namespace of
// its own: the client pings the endpoint across the vWires the binary made, and when the binary
// stops (the connection still open) nothing it made is left in any namespace.
func TestServesAConnectionAndLeavesNothing(t *testing.T) {
	fwdName, fwdNS := namespace(t)
	nscName, nscNS := namespace(t)
	nseName, _ := namespace(t)
	dir := cmdtest.TempDir(t)
	sock := func(name string) *url.URL { return &url.URL{Scheme: "unix", Path: filepath.Join(dir, name+".sock")} }

	ctx, cancel := context.WithCancel(context.Background())
	var served []<-chan error
	t.Cleanup(func() {
		cancel()
		for _, errs := range served {
			for range errs {
			}
		}
	})
	serve := func(u *url.URL, r grpcserve.Registrar) {
		errs, err := grpcserve.Serve(ctx, u, r)
		require.NoError(t, err)
		served = append(served, errs)
	}
	gen := func(name string) token.GeneratorFunc { return token.NewInsecure(time.Minute, token.WithName(name)) }
	serve(sock("nsmgr"), nsmgr.NewServer(ctx, gen("nsmgr"), nsmgr.WithName("nsmgr"), nsmgr.WithURL(sock("nsmgr"))))
	cc := cmdtest.Dial(t, sock("nsmgr").String())
	_, err := registry.NewNetworkServiceRegistryClient(cc).Register(ctx, &registry.NetworkService{Name: "icmp-responder"})
	require.NoError(t, err)
	serve(sock("nse"), endpoint.NewServer(ctx, gen("nse"), endpoint.WithName("nse"), endpoint.WithAdditionalFunctionality(
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: netnsOf("file:///var/run/netns/" + nseName)}),
	)))
	_, _, err = regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{"icmp-responder"}, Url: sock("nse").String()})
	require.NoError(t, err)

	p := cmdtest.Start(t, "ip", []string{"NSM_LOG_LEVEL=DEBUG", "NSM_NAME=fwd", "NSM_CONNECT_TO=" + sock("nsmgr").String(),
		"NSM_LISTEN_ON=" + sock("fwd").String()}, "netns", "exec", fwdName, bin)
	p.WaitStderr("msg=registered")

	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(sock("nsmgr")))
	mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
	mech.SetInterfaceName("nsm-1")
	mech.SetNetNSURL("file:///var/run/netns/" + nscName)
	requesting, done := context.WithTimeout(ctx, 20*time.Second)
	defer done()
	conn, err := nsc.Request(requesting, &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
	})
	require.NoError(t, err, "stderr:\n%s", p.Stderr())
	for _, dst := range conn.GetContext().GetIpContext().GetDstIpAddrs() {
		require.NoError(t, ping.Ping(nscNS, netip.MustParsePrefix(dst).Addr()), "ping %s", dst)
	}

	require.Equal(t, 0, p.Stop(), "stderr:\n%s", p.Stderr())
	require.Contains(t, p.Stderr(), "removed interfaces connections left at exit")
	for _, l := range links(t, handle(t, fwdNS)) {
		require.False(t, ifname.Ours(l), "the forwarder's %s is gone", l)
	}
	require.NotContains(t, links(t, handle(t, nscNS)), "nsm-1", "the client's vWire went with it")
	stopClient()
}
