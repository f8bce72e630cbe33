package conformance_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
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

func TestElements(t *testing.T) {
	for _, c := range []conformance.Case{
		{Name: "begin server", Server: server(begin.NewServer())},
		{Name: "begin client", Client: client(begin.NewClient())},
		{Name: "metadata server", Server: server(metadata.NewServer())},
		{Name: "metadata client", Client: client(metadata.NewClient())},
	} {
		if c.Request == nil {
			c.Request = request
		}
		conformance.Run(t, c)
	}
}
