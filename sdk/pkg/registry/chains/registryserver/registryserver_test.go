package registryserver_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/chains/registryserver"
	"vwire.dev/sdk/pkg/registry/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistry(t *testing.T) {
	reg := registryserver.New()
	ctx := context.Background()

	// Two endpoints of one service both register the service; it gets the default payload.
	for _, who := range []string{"nse-a", "nse-b"} {
		ns, err := reg.NS.Register(ctx, &registry.NetworkService{Name: "icmp", PathIds: []string{who}})
		require.NoError(t, err, who)
		require.Equal(t, "IP", ns.GetPayload())
	}

	nse := &registry.NetworkServiceEndpoint{Name: "nse-a", NetworkServiceNames: []string{"icmp"}, Url: "tcp://[::1]:5001", PathIds: []string{"nse-a"}}
	got, err := reg.NSE.Register(ctx, nse)
	require.NoError(t, err)
	require.NotNil(t, got.GetExpirationTime(), "a registration without expiry gets the default lifetime")

	intruder := nse.Clone()
	intruder.PathIds = []string{"mallory"}
	_, err = reg.NSE.Register(ctx, intruder)
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, codes.PermissionDenied, status.Code(reg.NSE.Unregister(ctx, intruder)))

	var found []string
	require.NoError(t, reg.NSE.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{NetworkServiceNames: []string{"icmp"}}},
		func(ev *next.Event[*registry.NetworkServiceEndpoint]) error {
			found = append(found, ev.Record.GetName()+" "+ev.Record.GetUrl())
			return nil
		}))
	require.Equal(t, []string{"nse-a tcp://[::1]:5001"}, found)
	require.NoError(t, reg.NSE.Unregister(ctx, nse))
}
