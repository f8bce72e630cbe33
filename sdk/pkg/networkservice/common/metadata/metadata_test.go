package metadata_test

import (
	"context"
	"errors"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var countKey = metadata.NewKey[int]("count")

// counter counts the Requests of each connection in its metadata and reports the count in a label.
type counter struct{}

func (counter) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	m := metadata.Server(ctx)
	n, _ := countKey.Load(m)
	countKey.Store(m, n+1)
	req.GetConnection().Labels = map[string]string{"count": string(rune('0' + n + 1))}
	return next.Server(ctx).Request(ctx, req)
}

func (counter) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	_, ok := countKey.LoadAndDelete(metadata.Server(ctx))
	conn.Labels = map[string]string{"had": map[bool]string{true: "yes", false: "no"}[ok]}
	return next.Server(ctx).Close(ctx, conn)
}

func req(id string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id}}
}

func TestStateLivesUntilClose(t *testing.T) {
	fail := inject.NewServer(nil)
	server := next.NewNetworkServiceServer(metadata.NewServer(), counter{}, fail)
	ctx := context.Background()

	for _, want := range []string{"1", "2", "3"} {
		conn, err := server.Request(ctx, req("a"))
		require.NoError(t, err)
		require.Equal(t, want, conn.GetLabels()["count"])
	}
	conn, err := server.Request(ctx, req("b"))
	require.NoError(t, err)
	require.Equal(t, "1", conn.GetLabels()["count"], "connections do not share state")

	closing := req("a").GetConnection()
	_, err = server.Close(ctx, closing)
	require.NoError(t, err)
	require.Equal(t, "yes", closing.GetLabels()["had"])
	conn, err = server.Request(ctx, req("a"))
	require.NoError(t, err)
	require.Equal(t, "1", conn.GetLabels()["count"], "Close dropped the state")

	fail.FailRequests(errors.New("boom"))
	_, err = server.Request(ctx, req("new"))
	require.Error(t, err)
	fail.FailRequests(nil)
	conn, err = server.Request(ctx, req("new"))
	require.NoError(t, err)
	require.Equal(t, "1", conn.GetLabels()["count"], "a failed first Request keeps nothing")

	_, err = server.Request(ctx, req("a"))
	require.NoError(t, err)
	fail.FailRequests(errors.New("boom"))
	_, err = server.Request(ctx, req("a"))
	require.Error(t, err)
	fail.FailRequests(nil)
	conn, err = server.Request(ctx, req("a"))
	require.NoError(t, err)
	require.Equal(t, "4", conn.GetLabels()["count"], "a failed refresh keeps the established state")
}

type clientProbe struct{ sawServerMap bool }

func (c *clientProbe) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	countKey.Store(metadata.Client(ctx), 7)
	func() {
		defer func() { c.sawServerMap = recover() == nil }()
		metadata.Server(ctx)
	}()
	return next.Client(ctx).Request(ctx, req, opts...)
}

func (c *clientProbe) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return next.Client(ctx).Close(ctx, conn, opts...)
}

func TestClientAndServerMapsAreSeparate(t *testing.T) {
	probe := &clientProbe{}
	client := next.NewNetworkServiceClient(metadata.NewClient(), probe)
	_, err := client.Request(context.Background(), req("a"))
	require.NoError(t, err)
	require.False(t, probe.sawServerMap, "a client chain has no server map")
}

func TestKeyOperations(t *testing.T) {
	var got []int
	server := next.NewNetworkServiceServer(metadata.NewServer(), probeKeys(func(m *metadata.Map) {
		v, loaded := countKey.LoadOrStore(m, 5)
		require.False(t, loaded)
		got = append(got, v)
		v, loaded = countKey.LoadOrStore(m, 6)
		require.True(t, loaded)
		got = append(got, v)
		countKey.Delete(m)
		_, ok := countKey.Load(m)
		require.False(t, ok)
	}))
	_, err := server.Request(context.Background(), req("a"))
	require.NoError(t, err)
	require.Equal(t, []int{5, 5}, got)
	require.Equal(t, "count", countKey.String())
}

type probeKeys func(*metadata.Map)

func (p probeKeys) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	p(metadata.Server(ctx))
	return next.Server(ctx).Request(ctx, req)
}

func (p probeKeys) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}
