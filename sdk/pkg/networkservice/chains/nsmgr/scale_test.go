package nsmgr_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"

	"vwire.dev/sdk/pkg/networkservice/common/clientinfo"
	"vwire.dev/sdk/pkg/networkservice/common/onidle"
	"vwire.dev/sdk/pkg/networkservice/common/spawn"
	"vwire.dev/sdk/pkg/networkservice/ipam/point2pointipam"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/tools/sandbox"
)

// TestScaleFromZero: the service has no endpoint on the client's node, so its second match sends
// the client to a supplier on another node, which starts an endpoint on the client's node; the
// client's retry reaches it through the first match, on a local path. Once idle, it retires.
// The client sets no label: its nsmgr labels the connection with its node (NODE_NAME; every
// manager of the sandbox reads the one environment, and only the first labels).
func TestScaleFromZero(t *testing.T) {
	t.Setenv("NODE_NAME", "node-0")
	mesh := sandbox.New(t, 2)
	mesh.RegisterService(&registry.NetworkService{Name: service, Matches: []*registry.Match{
		{Routes: []*registry.Destination{{DestinationSelector: map[string]string{clientinfo.NodeNameLabel: "{{.nodeName}}"}}}, Fallthrough: true},
		{Routes: []*registry.Destination{{DestinationSelector: map[string]string{"app": "supplier"}}}},
	}})
	var mu sync.Mutex
	spawned := map[string]*sandbox.Component{}
	start := func(_ context.Context, node, ns string) error {
		var host *sandbox.Node
		for _, n := range mesh.Nodes {
			if n.Name == node {
				host = n
			}
		}
		if host == nil {
			return context.Canceled
		}
		name := "spawned-" + node
		retire := make(chan struct{})
		c := host.NewEndpoint(&registry.NetworkServiceEndpoint{
			Name:                 name,
			NetworkServiceNames:  []string{ns},
			NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{ns: {Labels: map[string]string{clientinfo.NodeNameLabel: node}}},
		},
			onidle.NewServer(mesh.Context(), func() { close(retire) }, onidle.WithTimeout(300*time.Millisecond)),
			point2pointipam.NewServer(netip.MustParsePrefix("172.16.0.0/16")),
		)
		go func() {
			<-retire
			c.Stop()
		}()
		mu.Lock()
		spawned[name] = c
		mu.Unlock()
		return nil
	}
	mesh.Nodes[1].NewEndpoint(&registry.NetworkServiceEndpoint{
		Name:                 "supplier",
		NetworkServiceNames:  []string{service},
		NetworkServiceLabels: map[string]*registry.NetworkServiceLabels{service: {Labels: map[string]string{"app": "supplier"}}},
	}, spawn.NewServer(start))

	nsc := mesh.Nodes[0].NewClient("nsc")
	ctx, cancel := context.WithTimeout(mesh.Context(), 30*time.Second)
	defer cancel()
	conn, err := nsc.Request(ctx, request("c", nil))
	require.NoError(t, err)
	require.Equal(t, "node-0", conn.GetLabels()[clientinfo.NodeNameLabel])
	require.Equal(t, "spawned-node-0", conn.GetNetworkServiceEndpointName())
	require.Equal(t, []string{"nsc", "node-0-nsmgr", "node-0-fwd-0", "spawned-node-0"}, checks.PathNames(conn), "a local path")

	_, err = nsc.Close(ctx, conn)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(mesh.FindEndpoints(ctx, "spawned-node-0")) == 0 },
		10*time.Second, 10*time.Millisecond, "the idle endpoint retired and unregistered")
}
