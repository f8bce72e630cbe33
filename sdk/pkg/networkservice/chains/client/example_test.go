package client_test

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
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/tools/token"
)

// A workload asks for a network service at the next hop (an NSM manager in a mesh; here an
// endpoint directly), uses the connection, and closes it. The client refreshes and heals the
// connection in the background until it is closed or ctx ends.
func ExampleNewClient() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, _ := os.MkdirTemp("", "vw")
	defer os.RemoveAll(dir)
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nsm.sock")}

	nse := endpoint.NewServer(ctx, token.NewInsecure(10*time.Minute, token.WithName("nse")), endpoint.WithName("nse"),
		endpoint.WithAdditionalFunctionality(point2pointipam.NewServer(netip.MustParsePrefix("10.60.0.0/24"))))
	serving, err := endpoint.Serve(ctx, u, nse)
	if err != nil {
		fmt.Println(err)
		return
	}

	nsc := client.NewClient(ctx, client.WithName("my-workload"), client.WithClientURL(u))
	conn, err := nsc.Request(ctx, &networkservice.NetworkServiceRequest{
		Connection:           &networkservice.Connection{NetworkService: "my-service"},
		MechanismPreferences: []*networkservice.Mechanism{{Cls: cls.LOCAL, Type: kernel.MECHANISM}},
	})
	if err != nil {
		fmt.Println(err)
	} else {
		for _, seg := range conn.GetPath().GetPathSegments() {
			fmt.Println("hop:", seg.GetName())
		}
		fmt.Println("my address:", conn.GetContext().GetIpContext().GetSrcIpAddrs())
		_, err = nsc.Close(ctx, conn)
		fmt.Println("closed:", err == nil)
	}

	cancel()
	for err := range serving {
		fmt.Println(err)
	}
	// Output:
	// hop: my-workload
	// hop: nse
	// my address: [10.60.0.2/32]
	// closed: true
}
