package validate_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apivalidate "vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/registry/common/memory"
	"vwire.dev/sdk/pkg/registry/common/validate"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEndpoints(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		nse   *registry.NetworkServiceEndpoint
		field string // empty: accepted
	}{
		{name: "good", nse: &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[::1]:5001"}},
		{name: "no name", nse: &registry.NetworkServiceEndpoint{Url: "tcp://127.0.0.1:5001"}, field: "network_service_endpoint.name"},
		{name: "bad url", nse: &registry.NetworkServiceEndpoint{Name: "nse-2", Url: "http://x"}, field: "network_service_endpoint.url"},
		{name: "no url", nse: &registry.NetworkServiceEndpoint{Name: "nse-5", NetworkServiceNames: []string{"icmp"}},
			field: "network_service_endpoint.url: empty; an endpoint registers the URL it serves on"},
		{name: "too many labels", nse: &registry.NetworkServiceEndpoint{Name: "nse-6", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[::1]:5001",
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"icmp": {Labels: labels(apivalidate.MaxLabels + 1)}}},
			field: `network_service_endpoint.network_service_labels["icmp"].labels: 65 entries, over the limit MaxLabels = 64`},
		{name: "socket passed by descriptor", nse: &registry.NetworkServiceEndpoint{Name: "nse-4", Url: "inode://65024/9986156"},
			field: `endpoint "nse-4" registered a socket passed by descriptor (inode://65024/9986156), which only the nsmgr it is handed to can dial`},
		{name: "labels of a service not offered", nse: &registry.NetworkServiceEndpoint{Name: "nse-3", NetworkServiceNames: []string{"icmp"},
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{"vpn": {}}}, field: "network_service_labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := memory.NewNSE()
			chain := next.Chain(validate.NewNSE(), store)
			_, err := chain.Register(ctx, tc.nse)
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.Contains(t, err.Error(), tc.field)
			var found int
			require.NoError(t, store.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{Name: tc.nse.GetName()}},
				func(*next.Event[*registry.NetworkServiceEndpoint]) error { found++; return nil }))
			require.Zero(t, found, "nothing was stored")
			require.NoError(t, chain.Unregister(ctx, tc.nse), "removing is never refused for form")
		})
	}
}

func TestServices(t *testing.T) {
	chain := next.Chain(validate.NewNS(), memory.NewNS())
	_, err := chain.Register(context.Background(), &registry.NetworkService{Name: "icmp", Payload: "CARRIER-PIGEON"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "payload")
	_, err = chain.Register(context.Background(), &registry.NetworkService{Name: "icmp@corp.example", Payload: "ETHERNET"})
	require.NoError(t, err)
}

func labels(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// TestPassedSockets: an nsmgr's validate takes a socket passed by descriptor, a registry's not.
func TestPassedSockets(t *testing.T) {
	nse := &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "inode://65024/9986156"}
	_, err := next.Chain(validate.NewNSE(validate.WithPassedSockets()), memory.NewNSE()).Register(context.Background(), nse)
	require.NoError(t, err)
	_, err = next.Chain(validate.NewNSE(), memory.NewNSE()).Register(context.Background(), nse)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

// TestFindTemplates: a Find is refused only for a template over MaxRecordBytes; a template of
// nothing matches everything.
func TestFindTemplates(t *testing.T) {
	ctx := context.Background()
	none := func(*next.Event[*registry.NetworkServiceEndpoint]) error { return nil }
	chain := next.Chain(validate.NewNSE(), memory.NewNSE())
	require.NoError(t, chain.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{}, none))
	require.NoError(t, chain.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{Name: "nse-1"}}, none))
	big := &registry.NetworkServiceEndpoint{Name: strings.Repeat("n", apivalidate.MaxRecordBytes)}
	err := chain.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: big}, none)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "over the limit MaxRecordBytes = 65536")

	nsChain := next.Chain(validate.NewNS(), memory.NewNS())
	nsNone := func(*next.Event[*registry.NetworkService]) error { return nil }
	require.NoError(t, nsChain.Find(ctx, &next.Query[*registry.NetworkService]{}, nsNone))
	err = nsChain.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{Name: strings.Repeat("n", apivalidate.MaxRecordBytes)}}, nsNone)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}
