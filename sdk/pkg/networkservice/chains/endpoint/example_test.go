package endpoint_test

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/cls"
	"github.com/networkservicemesh/api/pkg/api/networkservice/mechanisms/kernel"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/token"
)

// A complete NSE: the standard endpoint chain plus addresses of both families, DNS settings and
// a kernel interface, served on a unix socket; a client asks for its service once.
func Example_customEndpoint() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "vw")
	defer os.RemoveAll(dir)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}

	const name = "icmp-responder-nse"
	nse := endpoint.NewServer(ctx, token.NewInsecure(10*time.Minute, token.WithName(name)),
		endpoint.WithName(name),
		endpoint.WithAdditionalFunctionality(
			point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
			dnscontext.NewServer(&networkservice.DNSConfig{DnsServerIps: []string{"172.16.0.1"}, SearchDomains: []string{"icmp.example"}}),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernel.MECHANISM: next.NewNetworkServiceServer(), // a real NSE makes the interface here
			}),
		))
	serving, err := endpoint.Serve(ctx, u, nse)
	if err != nil {
		fmt.Println(err)
		return
	}

	nsc := client.NewClient(ctx, client.WithName("nsc"), client.WithClientURL(u))
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
	})
	if err == nil {
		ipc := conn.GetContext().GetIpContext()
		fmt.Println("mechanism:", conn.GetMechanism().GetType())
		fmt.Println("client:", ipc.GetSrcIpAddrs(), "endpoint:", ipc.GetDstIpAddrs())
		fmt.Println("dns:", conn.GetContext().GetDnsContext().GetConfigs()[0].GetDnsServerIps())
		_, err = nsc.Close(ctx, conn)
	}
	fmt.Println("error:", err)

	cancel() // stops the endpoint and the client's background work
	for err := range serving {
		fmt.Println(err)
	}
	// Output:
	// mechanism: KERNEL
	// client: [172.16.0.2/32 fd16::2/128] endpoint: [172.16.0.1/32 fd16::1/128]
	// dns: [172.16.0.1]
	// error: <nil>
}
