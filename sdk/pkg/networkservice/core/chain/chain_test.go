package chain_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// label adds its name to the connection's labels and calls next.
type label string

func (l label) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	add(req.GetConnection(), string(l))
	return next.Server(ctx).Request(ctx, req)
}

func (l label) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

type clientLabel string

func (l clientLabel) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	add(req.GetConnection(), string(l))
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (l clientLabel) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func add(conn *networkservice.Connection, name string) {
	if conn.Labels == nil {
		conn.Labels = map[string]string{}
	}
	conn.Labels["order"] += name
}

// TestElementsRunInOrder, with tracing off and on: the same elements run in the same order, and
// with tracing on each one that changed the request says so in a debug line naming it.
func TestElementsRunInOrder(t *testing.T) {
	for _, traced := range []bool{false, true} {
		trace.Enable(traced)
		var logs bytes.Buffer
		ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

		server := chain.NewNetworkServiceServer(label("a"), label("b"), label("c"))
		conn, err := server.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-1"}})
		require.NoError(t, err)
		require.Equal(t, "abc", conn.GetLabels()["order"], "traced: %t", traced)
		_, err = server.Close(ctx, conn)
		require.NoError(t, err)

		client := chain.NewNetworkServiceClient(clientLabel("x"), clientLabel("y"))
		conn, err = client.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "conn-2"}})
		require.NoError(t, err)
		require.Equal(t, "xy", conn.GetLabels()["order"], "traced: %t", traced)

		if traced {
			require.Contains(t, logs.String(), "request changed", "a traced chain says what each element changed")
			require.Contains(t, logs.String(), "chain_test", "the line names the element")
		} else {
			require.Empty(t, logs.String(), "an untraced chain logs nothing")
		}
	}
	trace.Enable(false)
}
