package monitor_test

import (
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/monitor"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

func TestSnapshotIsTheInitialState(t *testing.T) {
	ctx := t.Context()
	mon := monitor.NewServer(ctx)
	u, _ := start(t, next.NewNetworkServiceServer(begin.NewServer(), metadata.NewServer(), mon), mon)
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	for _, id := range []string{"c1", "c2"} {
		_, err := networkservice.NewNetworkServiceClient(cc).Request(ctx, request(id, "blue"))
		require.NoError(t, err)
	}

	conns, err := monitor.Snapshot(ctx, cc, &networkservice.MonitorScopeSelector{})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"c1", "c2"}, keys(conns))
	conns, err = monitor.Snapshot(ctx, cc, &networkservice.MonitorScopeSelector{
		PathSegments: []*networkservice.PathSegment{{Id: "c2"}},
	})
	require.NoError(t, err)
	require.Equal(t, []string{"c2"}, keys(conns))
}

func TestSnapshotOfAServerWithoutMonitor(t *testing.T) {
	u, _ := start(t, next.NewNetworkServiceServer(), nil)
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	_, err = monitor.Snapshot(t.Context(), cc, &networkservice.MonitorScopeSelector{})
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}
