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
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"vwire.dev/sdk/pkg/networkservice/chains/client"
	"vwire.dev/sdk/pkg/networkservice/chains/endpoint"
	"vwire.dev/sdk/pkg/networkservice/common/authorize"
	"vwire.dev/sdk/pkg/networkservice/common/dial"
	"vwire.dev/sdk/pkg/networkservice/common/mechanisms"
	"vwire.dev/sdk/pkg/networkservice/connectioncontext/dnscontext"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/spiffe"
)

// A complete NSE: the standard endpoint chain plus addresses of both families, DNS settings and
// a kernel interface, served on a unix socket with its SPIFFE identity (mutual TLS, tokens signed
// with its SVID, every path checked); a client with an identity of its own asks for its service
// once.
func Example_customEndpoint() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "vw")
	defer os.RemoveAll(dir)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}

	// In a deployment each identity comes from the SPIRE agent:
	// spiffe.WorkloadAPI(ctx, os.Getenv("SPIFFE_ENDPOINT_SOCKET")). Here a trust domain of the
	// example's own issues them.
	ca, _ := spiffe.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	nseID, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/icmp-responder-nse"), time.Hour)
	nscID, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/nsc"), time.Hour)

	const name = "icmp-responder-nse"
	tokens, _ := spiffe.Tokens(nseID, 10*time.Minute)
	nse := endpoint.NewServer(ctx, tokens,
		endpoint.WithName(name),
		endpoint.WithAuthorizeOptions(authorize.WithIdentity(nseID)),
		endpoint.WithAdditionalFunctionality(
			point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/24"), netip.MustParsePrefix("fd16::/120")),
			dnscontext.NewServer(&networkservice.DNSConfig{DnsServerIps: []string{"172.16.0.1"}, SearchDomains: []string{"icmp.example"}}),
			mechanisms.NewServer(map[string]networkservice.NetworkServiceServer{
				kernel.MECHANISM: next.NewNetworkServiceServer(), // a real NSE makes the interface here
			}),
		))
	serving, err := endpoint.Serve(ctx, u, nse, grpc.Creds(spiffe.ServerCredentials(nseID)))
	if err != nil {
		fmt.Println(err)
		return
	}

	nscTokens, _ := spiffe.Tokens(nscID, 10*time.Minute)
	nsc := client.NewClient(ctx, client.WithName("nsc"), client.WithClientURL(u), client.WithTokenGenerator(nscTokens),
		client.WithDialOptions(dial.WithDialOptions(grpc.WithTransportCredentials(spiffe.ClientCredentials(nscID)))))
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
