package inject_test

import (
	"context"
	"errors"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFailsOnDemand(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	fail, rec := inject.NewServer(boom), checks.NewServer()
	server := next.NewNetworkServiceServer(fail, rec)
	req := func() *networkservice.NetworkServiceRequest {
		return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1"}}
	}

	_, err := server.Request(ctx, req())
	require.ErrorIs(t, err, boom)
	require.Empty(t, rec.Requests(), "a failed Request does not reach the rest of the chain")

	fail.FailRequests(nil)
	conn, err := server.Request(ctx, req())
	require.NoError(t, err)
	require.Len(t, rec.Requests(), 1)

	fail.FailCloses(boom)
	_, err = server.Close(ctx, conn)
	require.ErrorIs(t, err, boom)
	require.Len(t, rec.Closes(), 1, "a failed Close reached the rest of the chain first")
	require.Empty(t, rec.Open())

	fail.FailCloses(nil)
	_, err = server.Close(ctx, conn)
	require.NoError(t, err)
}
