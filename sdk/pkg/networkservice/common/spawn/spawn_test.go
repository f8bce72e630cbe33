package spawn_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/networkservice/common/spawn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func request(labels map[string]string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", NetworkService: "icmp", Labels: labels}}
}

func TestStartsOnceAndAsksAgain(t *testing.T) {
	var starts, running, most atomic.Int32
	release := make(chan struct{})
	s := spawn.NewServer(func(_ context.Context, node, ns string) error {
		require.Equal(t, "node-1", node)
		require.Equal(t, "icmp", ns)
		starts.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return nil
	})
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Request(context.Background(), request(map[string]string{"nodeName": "node-1"})) })
	}
	require.Eventually(t, func() bool { return starts.Load() == 1 }, 5e9, 1e6)
	close(release)
	wg.Wait()
	require.Equal(t, int32(1), most.Load(), "requests during a start wait for it instead of starting another")
	for _, err := range errs {
		require.Equal(t, codes.Unavailable, status.Code(err))
		require.Contains(t, err.Error(), `started an endpoint of "icmp" on node "node-1"`)
	}
}

func TestErrors(t *testing.T) {
	s := spawn.NewServer(func(context.Context, string, string) error { return errors.New("no capacity") })
	_, err := s.Request(context.Background(), request(nil))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "nodeName")

	_, err = s.Request(context.Background(), request(map[string]string{"nodeName": "node-1"}))
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Contains(t, err.Error(), "no capacity")

	_, err = s.Close(context.Background(), request(nil).GetConnection())
	require.NoError(t, err)
}
