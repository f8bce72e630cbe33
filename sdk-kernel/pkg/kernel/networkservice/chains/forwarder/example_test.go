package forwarder_test

import (
	"context"
	"net/netip"
	"net/url"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	regclient "vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/token"

	"vwire.dev/sdk-kernel/pkg/kernel/ifname"
	"vwire.dev/sdk-kernel/pkg/kernel/networkservice/chains/forwarder"
	"vwire.dev/sdk-kernel/pkg/kernel/nsfile"
)

// A node's forwarder: it works in its own namespace, removes what a previous run left there,
// serves, and registers with its nsmgr as an endpoint of the service "forwarder".
func Example() {
	ctx := context.Background()
	fwdNS, err := nsfile.Open("file:///proc/self/ns/net")
	if err != nil {
		panic(err)
	}
	defer func() { _ = fwdNS.Close() }()
	if _, err := ifname.Sweep(fwdNS); err != nil {
		panic(err)
	}
	nsmgr, err := grpc.NewClient("unix:///var/lib/networkservicemesh/nsm.io.sock", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	fwd, err := forwarder.NewServer(ctx, token.NewInsecure(10*time.Minute, token.WithName("fwd-1")), nsmgr, fwdNS,
		forwarder.WithName("fwd-1"),
		forwarder.WithTunnelIP(netip.MustParseAddr("10.0.0.1")))
	if err != nil {
		panic(err)
	}
	self := &url.URL{Scheme: "unix", Path: "/run/vw/fwd-1.sock"}
	if _, err := grpcserve.Serve(ctx, self, fwd); err != nil {
		panic(err)
	}
	_, unregister, err := regclient.Register(ctx, nsmgr, &registry.NetworkServiceEndpoint{
		Name:                 "fwd-1",
		NetworkServiceNames:  []string{"forwarder"},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"forwarder": {Labels: map[string]string{"p2p": "true"}}},
		Url:                  self.String(),
	})
	if err != nil {
		panic(err)
	}
	defer func() { _ = unregister(ctx) }()
}
