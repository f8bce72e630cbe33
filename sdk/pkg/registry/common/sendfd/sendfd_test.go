package sendfd_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"vwire.dev/sdk/pkg/registry/common/sendfd"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nse = registry.NetworkServiceEndpoint

// TestWhatGoesOut: a record with a tcp URL passes as it is; one whose unix socket cannot be
// opened is refused before anything goes out, and its Unregister still goes. (Sending itself is
// tested with registry/common/recvfd, over gRPC.)
func TestWhatGoesOut(t *testing.T) {
	ctx := context.Background()
	rec := checks.NewNSE()
	c := next.Chain(sendfd.NewNSE(), rec)
	_, err := c.Register(ctx, &nse{Name: "a", Url: "tcp://10.0.0.1:5001"})
	require.NoError(t, err)
	_, err = c.Register(ctx, &nse{Name: "b", Url: "unix:///nonexistent/nse.sock"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "unix:///nonexistent/nse.sock")
	require.NoError(t, c.Unregister(ctx, &nse{Name: "b", Url: "unix:///nonexistent/nse.sock"}))
	require.Equal(t, []string{"a"}, names(rec.Registers()), "only the tcp record went out")
	require.Len(t, rec.Unregisters(), 1)
}

func names(calls []checks.Call[*nse]) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Record.GetName())
	}
	return out
}
