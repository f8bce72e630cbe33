package next_test

import (
	"context"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/next"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mark appends its name to the connection's labels["trail"] on the way in.
type mark string

func (m mark) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().GetLabels()["trail"] += string(m)
	return next.Server(ctx).Request(ctx, req)
}

func (m mark) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	conn.GetLabels()["trail"] += string(m)
	return next.Server(ctx).Close(ctx, conn)
}

type markClient string

func (m markClient) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	req.GetConnection().GetLabels()["trail"] += string(m)
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (m markClient) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	conn.GetLabels()["trail"] += string(m)
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func request() *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c", Labels: map[string]string{}}}
}

func TestServerOrderAndNesting(t *testing.T) {
	inner := next.NewNetworkServiceServer(mark("b"), mark("c"))
	outer := next.NewNetworkServiceServer(mark("a"), inner, mark("d"))

	conn, err := outer.Request(context.Background(), request())
	require.NoError(t, err)
	require.Equal(t, "abcd", conn.GetLabels()["trail"], "a nested chain continues into the outer chain")

	_, err = outer.Close(context.Background(), conn)
	require.NoError(t, err)
	require.Equal(t, "abcdabcd", conn.GetLabels()["trail"])
}

func TestClientOrderAndNesting(t *testing.T) {
	inner := next.NewNetworkServiceClient(markClient("b"), markClient("c"))
	outer := next.NewNetworkServiceClient(markClient("a"), inner, markClient("d"))

	conn, err := outer.Request(context.Background(), request())
	require.NoError(t, err)
	require.Equal(t, "abcd", conn.GetLabels()["trail"])

	_, err = outer.Close(context.Background(), conn)
	require.NoError(t, err)
	require.Equal(t, "abcdabcd", conn.GetLabels()["trail"])
}

func TestEmptyChainsAnswer(t *testing.T) {
	req := request()
	conn, err := next.NewNetworkServiceServer().Request(context.Background(), req)
	require.NoError(t, err)
	require.Same(t, req.GetConnection(), conn)
	conn, err = next.NewNetworkServiceClient().Request(context.Background(), req)
	require.NoError(t, err)
	require.Same(t, req.GetConnection(), conn)
}

func BenchmarkServerChain10(b *testing.B) {
	elems := make([]networkservice.NetworkServiceServer, 10)
	for i := range elems {
		elems[i] = passThrough{}
	}
	c := next.NewNetworkServiceServer(elems...)
	req := request()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Request(ctx, req)
	}
}

type passThrough struct{}

func (passThrough) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return next.Server(ctx).Request(ctx, req)
}

func (passThrough) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestEmptyChainInsideAChainPassesOn(t *testing.T) {
	conn, err := next.NewNetworkServiceServer(mark("a"), next.NewNetworkServiceServer(), mark("b")).Request(context.Background(), request())
	require.NoError(t, err)
	require.Equal(t, "ab", conn.GetLabels()["trail"])
	conn, err = next.NewNetworkServiceClient(markClient("a"), next.NewNetworkServiceClient(), markClient("b")).Request(context.Background(), request())
	require.NoError(t, err)
	require.Equal(t, "ab", conn.GetLabels()["trail"])
}
