package adapters_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type serverMark string

func (m serverMark) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().GetLabels()["trail"] += string(m)
	return next.Server(ctx).Request(ctx, req)
}

func (m serverMark) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	conn.GetLabels()["trail"] += string(m)
	return next.Server(ctx).Close(ctx, conn)
}

type clientMark string

func (m clientMark) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	req.GetConnection().GetLabels()["trail"] += string(m)
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (m clientMark) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	conn.GetLabels()["trail"] += string(m)
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func TestAdaptedElementsContinueIntoTheirChain(t *testing.T) {
	// server chain: s1, (client c1 as a server), s2; the client calls next and reaches s2.
	server := next.NewNetworkServiceServer(serverMark("1"), adapters.NewClientToServer(clientMark("2")), serverMark("3"))
	// client chain: c1, (server as a client), c3
	client := next.NewNetworkServiceClient(clientMark("a"), adapters.NewServerToClient(serverMark("b")), clientMark("c"))

	for _, tc := range []struct {
		name string
		run  func(*networkservice.Connection) error
		want string
	}{
		{"server Request", func(c *networkservice.Connection) error {
			_, err := server.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: c})
			return err
		}, "123"},
		{"server Close", func(c *networkservice.Connection) error { _, err := server.Close(context.Background(), c); return err }, "123"},
		{"client Request", func(c *networkservice.Connection) error {
			_, err := client.Request(context.Background(), &networkservice.NetworkServiceRequest{Connection: c})
			return err
		}, "abc"},
		{"client Close", func(c *networkservice.Connection) error { _, err := client.Close(context.Background(), c); return err }, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := &networkservice.Connection{Id: "c", Labels: map[string]string{}}
			require.NoError(t, tc.run(conn))
			require.Equal(t, tc.want, conn.GetLabels()["trail"])
		})
	}
}
