package validate_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apivalidate "vwire.dev/api/validate"
	"vwire.dev/sdk/pkg/networkservice/common/validate"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/checks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conn  *networkservice.Connection
		mech  *networkservice.Mechanism
		field string // empty: accepted
	}{
		{name: "good", conn: &networkservice.Connection{Id: "c", NetworkService: "icmp"}, mech: &networkservice.Mechanism{Cls: "LOCAL", Type: "KERNEL"}},
		{name: "no network service", conn: &networkservice.Connection{Id: "c"}, field: "connection.network_service"},
		{name: "bad CIDR", conn: &networkservice.Connection{Id: "c", NetworkService: "icmp", Context: &networkservice.ConnectionContext{
			IpContext: &networkservice.IPContext{SrcIpAddrs: []string{"10.0.0.300/32"}}}}, field: "connection.context.ip_context.src_ip_addrs[0]"},
		{name: "unknown mechanism", conn: &networkservice.Connection{Id: "c", NetworkService: "icmp"}, mech: &networkservice.Mechanism{Cls: "LOCAL", Type: "CARRIER_PIGEON"}, field: "mechanism_preferences[0].type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := checks.NewServer()
			server := next.NewNetworkServiceServer(validate.NewServer(), rec)
			req := &networkservice.NetworkServiceRequest{Connection: tc.conn}
			if tc.mech != nil {
				req.MechanismPreferences = []*networkservice.Mechanism{tc.mech}
			}
			_, err := server.Request(context.Background(), req)
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, codes.InvalidArgument, status.Code(err))
			require.Contains(t, err.Error(), tc.field)
			require.Empty(t, rec.Requests(), "nothing after validate saw a malformed request")

			_, err = server.Close(context.Background(), tc.conn)
			require.NoError(t, err, "Close is never refused for its form")
		})
	}
}

// TestCloseOverABound: Close is refused only for a connection over a bound, which no Request
// accepted, and then nothing after validate sees it.
func TestCloseOverABound(t *testing.T) {
	rec := checks.NewServer()
	server := next.NewNetworkServiceServer(validate.NewServer(), rec)
	path := &networkservice.Path{}
	for i := range apivalidate.MaxPathSegments + 1 {
		path.PathSegments = append(path.PathSegments, &networkservice.PathSegment{Name: fmt.Sprintf("hop-%d", i)})
	}
	_, err := server.Close(context.Background(), &networkservice.Connection{Id: "c", Path: path})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "connection.path.path_segments: 33 entries, over the limit MaxPathSegments = 32")
	require.Empty(t, rec.Closes())
}
