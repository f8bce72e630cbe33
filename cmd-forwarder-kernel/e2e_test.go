package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"vwire.dev/sdk/pkg/networkservice/common/dial"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk-kernel/pkg/kernel/ping"
	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/chains/nsmgr"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms/sendfd"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/envconfig/cmdtest"
	"vwire.dev/sdk/pkg/tools/fdpass"
	"vwire.dev/sdk/pkg/tools/grpcserve"

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
// stops with NSM_SWEEP_AT_EXIT=true (the connection still open) nothing it made is left in any
// namespace.
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
	serve := func(u *url.URL, r grpcserve.Registrar, name string) {
		errs, err := grpcserve.Serve(ctx, u, r, cmdtest.ServerOptions(t, name)...)
		require.NoError(t, err)
		served = append(served, errs)
	}
	serve(sock("nsmgr"), nsmgr.NewServer(ctx, cmdtest.Tokens(t, "nsmgr", time.Minute), nsmgr.WithName("nsmgr"), nsmgr.WithURL(sock("nsmgr")),
		nsmgr.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsmgr")...))), "nsmgr")
	cc := cmdtest.Dial(t, sock("nsmgr").String())
	_, err := registry.NewNetworkServiceRegistryClient(cc).Register(ctx, &registry.NetworkService{Name: "icmp-responder"})
	require.NoError(t, err)
	serve(sock("nse"), endpoint.NewServer(ctx, cmdtest.Tokens(t, "nse", time.Minute), endpoint.WithName("nse"), endpoint.WithAdditionalFunctionality(
		point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
		sendfd.NewServer(), // its namespace goes to the forwarder as a descriptor
		mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: netnsOf("file:///var/run/netns/" + nseName)}),
	)), "nse")
	_, _, err = regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{"icmp-responder"}, Url: sock("nse").String()})
	require.NoError(t, err)

	p := cmdtest.Start(t, "ip", []string{"NSM_LOG_LEVEL=DEBUG", "NSM_NAME=fwd", "NSM_CONNECT_TO=" + sock("nsmgr").String(),
		"NSM_LISTEN_ON=" + sock("fwd").String(), "NSM_SWEEP_AT_EXIT=true"}, "netns", "exec", fwdName, bin)
	p.WaitStderr("msg=registered")

	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(sock("nsmgr")),
		client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
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

// TestAClientInNamespacesOfItsOwn is the check of descriptor passing with the real binaries:
// cmd-nsc runs in mount, network and pid namespaces of its own (unshare), as in a pod, where the
// path it has for its namespace, /proc/1/ns/net, names the node's namespace to anyone else.
// Its namespace reaches cmd-forwarder-kernel through cmd-nsmgr as a descriptor, the vWire is
// made in it (and nowhere else) and carries ping. Before that, clients naming a namespace they
// do not hold are refused with PermissionDenied, and nothing is made.
func TestAClientInNamespacesOfItsOwn(t *testing.T) {
	fwdName, fwdNS := namespace(t)
	nseName, nseNS := namespace(t)
	dir := cmdtest.TempDir(t)
	sock := func(name string) *url.URL { return &url.URL{Scheme: "unix", Path: filepath.Join(dir, name+".sock")} }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	mgr := cmdtest.Start(t, nsmgrBin, []string{"NSM_NAME=nsmgr", "NSM_LISTEN_ON=" + sock("nsmgr").String()})
	mgr.WaitStderr("msg=serving")
	cc := cmdtest.Dial(t, sock("nsmgr").String())
	_, err := registry.NewNetworkServiceRegistryClient(cc).Register(ctx, &registry.NetworkService{Name: "icmp-responder"})
	require.NoError(t, err)
	rec := checks.NewServer()
	errs, err := endpoint.Serve(ctx, sock("nse"), endpoint.NewServer(ctx, cmdtest.Tokens(t, "nse", time.Minute),
		endpoint.WithName("nse"), endpoint.WithAdditionalFunctionality(
			point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
			sendfd.NewServer(),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{kernel.MECHANISM: netnsOf("file:///var/run/netns/" + nseName)}),
			rec,
		)), cmdtest.ServerOptions(t, "nse")...)
	require.NoError(t, err)
	defer func() {
		cancel()
		for range errs {
		}
	}()
	_, _, err = regclient.Register(ctx, cc, &registry.NetworkServiceEndpoint{Name: "nse", NetworkServiceNames: []string{"icmp-responder"}, Url: sock("nse").String()})
	require.NoError(t, err)
	fwd := cmdtest.Start(t, "ip", []string{"NSM_NAME=fwd", "NSM_CONNECT_TO=" + sock("nsmgr").String(),
		"NSM_LISTEN_ON=" + sock("fwd").String(), "NSM_SWEEP_AT_EXIT=true"}, "netns", "exec", fwdName, bin)
	fwd.WaitStderr("msg=registered")

	host, err := netns.Get()
	require.NoError(t, err)
	defer host.Close()
	before := [3][]string{links(t, handle(t, fwdNS)), links(t, handle(t, nseNS)), links(t, handle(t, host))}
	held, err := fdpass.PathURL("/proc/self/ns/net")
	require.NoError(t, err)
	clientCtx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	nsc := client.NewClient(clientCtx, client.WithName("nsc"), client.WithClientURL(sock("nsmgr")),
		client.WithTokenGenerator(cmdtest.Tokens(t, "nsc", time.Minute)), client.WithDialOptions(dial.WithDialOptions(cmdtest.DialOptions(t, "nsc")...)))
	for _, netnsURL := range []string{
		held,                    // an inode URL whose descriptor it does not send: refused by the nsmgr
		"file:///proc/1/ns/net", // a path, passed on as it is: refused by the forwarder
	} {
		mech := kernel.ToMechanism(&networkservice.Mechanism{Cls: cls.LOCAL, Type: kernel.MECHANISM})
		mech.SetInterfaceName("nsm-1")
		mech.SetNetNSURL(netnsURL)
		// A context with received files makes the client chain pass the URL on as it is.
		requesting, done := context.WithTimeout(fdpass.WithFiles(ctx, fdpass.NewFiles()), 20*time.Second)
		_, err := nsc.Request(requesting, &networkservice.NetworkServiceRequest{
			Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
			MechanismPreferences: []*networkservice.Mechanism{mech.Mechanism},
		})
		done()
		require.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", netnsURL, err)
	}
	require.Empty(t, rec.Requests(), "the endpoint never heard of them")
	require.Equal(t, before, [3][]string{links(t, handle(t, fwdNS)), links(t, handle(t, nseNS)), links(t, handle(t, host))}, "nothing was made")
	stopClient()

	p := cmdtest.Start(t, "unshare", []string{"NSM_NAME=nsc", "NSM_CONNECT_TO=" + sock("nsmgr").String(),
		"NSM_NETWORK_SERVICES=kernel://icmp-responder/nsm-1"}, "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", nscBin)
	p.WaitStderr("msg=connected")
	nscNS, err := netns.GetFromPid(p.Pid()) // unshare itself is in the client's network namespace
	require.NoError(t, err)
	defer nscNS.Close()
	require.Contains(t, links(t, handle(t, nscNS)), "nsm-1", "the vWire is in the client's namespace")
	require.NotContains(t, links(t, handle(t, host)), "nsm-1", "and not in the node's")
	addrs, err := handle(t, nseNS).AddrList(nil, netlink.FAMILY_ALL)
	require.NoError(t, err)
	pinged := 0
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && a.Scope == unix.RT_SCOPE_UNIVERSE && !ip.IsLoopback() {
			require.NoError(t, ping.Ping(nscNS, ip.Unmap()), "ping %s", ip)
			pinged++
		}
	}
	require.Equal(t, 2, pinged, "the endpoint's IPv4 and IPv6 addresses answer across the vWire")

	// SIGTERM to cmd-nsc itself (unshare's child): it closes its connection and exits.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Pid(), p.Pid()))
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(string(children)))
	require.NoError(t, err)
	require.NoError(t, unix.Kill(child, unix.SIGTERM))
	require.Equal(t, 0, p.Wait(), "stderr:\n%s", p.Stderr())
	require.Contains(t, p.Stderr(), "msg=closed")
	require.Equal(t, before[0], links(t, handle(t, fwdNS)), "the forwarder removed the vWire")
	require.Equal(t, 0, fwd.Stop(), "stderr:\n%s", fwd.Stderr())
	require.Equal(t, 0, mgr.Stop(), "stderr:\n%s", mgr.Stderr())
}
