package conformance_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/discover"
	"vwire.dev/sdk/pkg/networkservice/common/discoverforwarder"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/roundrobin"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/registry/common/memory"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "icmp-responder"},
		MechanismPreferences: []*networkservice.Mechanism{
			{Cls: "LOCAL", Type: "KERNEL", Parameters: map[string]string{"name": "nsm-1"}},
		},
	}
}

func server(s networkservice.NetworkServiceServer) func(context.Context) networkservice.NetworkServiceServer {
	return func(context.Context) networkservice.NetworkServiceServer { return s }
}

func client(c networkservice.NetworkServiceClient) func(context.Context) networkservice.NetworkServiceClient {
	return func(context.Context) networkservice.NetworkServiceClient { return c }
}

// registered returns a memory store holding nses.
func registered(nses ...*registry.NetworkServiceEndpoint) regnext.NSE {
	reg := memory.NewNSE()
	for _, nse := range nses {
		if _, err := reg.Register(context.Background(), nse); err != nil {
			panic(err)
		}
	}
	return reg
}

// discovering returns discover over a registry with request()'s network service and two
// endpoints of it.
func discovering() networkservice.NetworkServiceServer {
	ns := memory.NewNS()
	if _, err := ns.Register(context.Background(), &registry.NetworkService{Name: "icmp-responder", Payload: "IP"}); err != nil {
		panic(err)
	}
	return discover.NewServer(ns, registered(
		&registry.NetworkServiceEndpoint{Name: "nse-a", Url: "tcp://127.0.0.1:5001", NetworkServiceNames: []string{"icmp-responder"}},
		&registry.NetworkServiceEndpoint{Name: "nse-b", Url: "tcp://[::1]:5001", NetworkServiceNames: []string{"icmp-responder"}},
	))
}

// forwarding returns discoverforwarder over a registry with one forwarder.
func forwarding() networkservice.NetworkServiceServer {
	return discoverforwarder.NewServer(registered(
		&registry.NetworkServiceEndpoint{Name: "fwd-a", Url: "unix:///var/lib/vwire/fwd-a.sock", NetworkServiceNames: []string{"forwarder"}},
	))
}

func TestElements(t *testing.T) {
	for _, c := range []conformance.Case{
		{Name: "begin server", Server: server(begin.NewServer())},
		{Name: "begin client", Client: client(begin.NewClient())},
		{Name: "metadata server", Server: server(metadata.NewServer())},
		{Name: "metadata client", Client: client(metadata.NewClient())},
		{Name: "discover server", Server: server(discovering())},
		{Name: "roundrobin server", Server: server(roundrobin.NewServer()), Before: []networkservice.NetworkServiceServer{discovering()}},
		{Name: "discoverforwarder server", Server: server(forwarding()),
			Before: []networkservice.NetworkServiceServer{discovering(), roundrobin.NewServer()}},
	} {
		if c.Request == nil {
			c.Request = request
		}
		conformance.Run(t, c)
	}
}
