package sandbox_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/tools/sandbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMeshAcrossNodes: a client on the first node reaches an endpoint on the second through
// every hop, the endpoint is in the registry while it runs, and a stopped component leaves it.
func TestMeshAcrossNodes(t *testing.T) {
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: "svc"})
	nse := mesh.Nodes[1].NewEndpoint(&registry.NetworkServiceEndpoint{Name: "nse-1", NetworkServiceNames: []string{"svc"}})
	ctx, cancel := context.WithTimeout(mesh.Context(), 20*time.Second)
	defer cancel()

	conn, err := mesh.Nodes[0].NewClient("nsc").Request(ctx, &networkservice.NetworkServiceRequest{
		Connection: &networkservice.Connection{Id: "conn-1", NetworkService: "svc"},
	})
	require.NoError(t, err)
	require.Equal(t, "nse-1", conn.GetNetworkServiceEndpointName())
	var names []string
	for _, s := range conn.GetPath().GetPathSegments() {
		names = append(names, s.GetName())
	}
	require.Len(t, names, 6, "client, nsmgr, forwarder, nsmgr, forwarder, endpoint: %v", names)
	require.Equal(t, "nse-1", names[5])
	require.Len(t, mesh.FindEndpoints(ctx, "nse-1"), 1)

	_, err = os.Stat(nse.URL.Path)
	require.NoError(t, err, "the endpoint serves on a unix socket")
	nse.Stop()
	require.Eventually(t, func() bool { return len(mesh.FindEndpoints(ctx, "nse-1")) == 0 }, 10*time.Second, 10*time.Millisecond,
		"a stopped endpoint unregisters")
}
