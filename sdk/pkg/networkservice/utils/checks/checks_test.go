package checks_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRecorderKeepsRequestsClosesAndOpen(t *testing.T) {
	rec := checks.NewServer()
	srv := chain.NewNetworkServiceServer(rec)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		_, err := srv.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}})
		require.NoError(t, err)
	}
	_, err := srv.Close(ctx, &networkservice.Connection{Id: "a"})
	require.NoError(t, err)

	require.Len(t, rec.Requests(), 2)
	require.Equal(t, "a", rec.Closes()[0].GetId())
	require.Equal(t, []string{"b"}, rec.Open())
}

func TestPathNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		conn *networkservice.Connection
		want []string
	}{
		{"no path", &networkservice.Connection{}, nil},
		{"hops in order", &networkservice.Connection{Path: &networkservice.Path{PathSegments: []*networkservice.PathSegment{
			{Name: "nsc"}, {Name: "nsmgr"}, {Name: "nse"},
		}}}, []string{"nsc", "nsmgr", "nse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, checks.PathNames(tc.conn))
		})
	}
}
