package client_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/chains/client"
	"vwire.dev/sdk/pkg/registry/core/next"
)

// labelNSE is an extra element: it labels every endpoint it registers.
type labelNSE struct{}

func (labelNSE) Register(ctx context.Context, r *registry.NetworkServiceEndpoint) (*registry.NetworkServiceEndpoint, error) {
	r.NetworkServiceLabels = map[string]*registry.NetworkServiceLabels{"icmp": {Labels: map[string]string{"by": "extra"}}}
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Register(ctx, r)
}

func (labelNSE) Find(ctx context.Context, q *next.Query[*registry.NetworkServiceEndpoint], send func(*next.Event[*registry.NetworkServiceEndpoint]) error) error {
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Find(ctx, q, send)
}

func (labelNSE) Unregister(ctx context.Context, r *registry.NetworkServiceEndpoint) error {
	return next.Of[*registry.NetworkServiceEndpoint](ctx).Unregister(ctx, r)
}

// payloadNS is an extra element: every service it registers carries ETHERNET.
type payloadNS struct{}

func (payloadNS) Register(ctx context.Context, r *registry.NetworkService) (*registry.NetworkService, error) {
	r.Payload = "ETHERNET"
	return next.Of[*registry.NetworkService](ctx).Register(ctx, r)
}

func (payloadNS) Find(ctx context.Context, q *next.Query[*registry.NetworkService], send func(*next.Event[*registry.NetworkService]) error) error {
	return next.Of[*registry.NetworkService](ctx).Find(ctx, q, send)
}

func (payloadNS) Unregister(ctx context.Context, r *registry.NetworkService) error {
	return next.Of[*registry.NetworkService](ctx).Unregister(ctx, r)
}

// TestChainsOfNSMsShape: the constructors of NSM's shape dial the registry themselves, run the
// extra elements, name the hop, and close their connection when ctx ends (goleak).
func TestChainsOfNSMsShape(t *testing.T) {
	path := socketPath(t)
	reg, stop := serve(t, path)
	t.Cleanup(stop)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u := &url.URL{Scheme: "unix", Path: path}

	ns := client.NewNetworkServiceRegistryClient(ctx, client.WithClientURL(u), client.WithName("nse-1"),
		client.WithNSAdditionalFunctionality(payloadNS{}))
	_, err := ns.Register(ctx, &registry.NetworkService{Name: "icmp"})
	require.NoError(t, err)
	var payloads []string
	require.NoError(t, reg.NS.Find(ctx, &next.Query[*registry.NetworkService]{Record: &registry.NetworkService{}},
		func(ev *next.Event[*registry.NetworkService]) error {
			payloads = append(payloads, ev.Record.GetPayload())
			return nil
		}))
	require.Equal(t, []string{"ETHERNET"}, payloads)

	nse := client.NewNetworkServiceEndpointRegistryClient(ctx, client.WithClientURL(u), client.WithName("nse-1"),
		client.WithDialOptions(), client.WithNSEAdditionalFunctionality(labelNSE{}))
	got, err := nse.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"})
	require.NoError(t, err)
	require.Equal(t, "nse-1", got.GetPathIds()[0])
	require.Equal(t, "extra", got.GetNetworkServiceLabels()["icmp"].GetLabels()["by"])
	require.Equal(t, []string{"nse-1"}, names(t, reg))
	require.NoError(t, nse.Unregister(ctx, got))
	require.Empty(t, names(t, reg))
}

// TestRegisterRunsExtraElements: Register's chain takes the extra elements too.
func TestRegisterRunsExtraElements(t *testing.T) {
	path := socketPath(t)
	_, stop := serve(t, path)
	t.Cleanup(stop)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, unregister, err := client.Register(ctx, dial(t, path),
		&registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"icmp"}, Url: "tcp://127.0.0.1:5001"},
		client.WithNSEAdditionalFunctionality(labelNSE{}))
	require.NoError(t, err)
	require.Equal(t, "extra", got.GetNetworkServiceLabels()["icmp"].GetLabels()["by"])
	require.NoError(t, unregister(ctx))
}

// TestNoURLOrABadOneFailsEveryCall: the constructors cannot return an error; their chains do.
func TestNoURLOrABadOneFailsEveryCall(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, opts := range [][]client.Option{nil, {client.WithClientURL(&url.URL{Scheme: "http", Host: "registry:5002"})}} {
		nse := client.NewNetworkServiceEndpointRegistryClient(ctx, opts...)
		_, err := nse.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1"})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		require.ErrorContains(t, err, "WithClientURL")
		require.Equal(t, codes.InvalidArgument, status.Code(nse.Unregister(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1"})))
		require.Error(t, client.NewNetworkServiceRegistryClient(ctx, opts...).Find(ctx, &next.Query[*registry.NetworkService]{}, nil))
	}
}
