package metrics_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/common/begin"
	"vwire.dev/sdk/pkg/networkservice/common/metadata"
	"vwire.dev/sdk/pkg/networkservice/common/metrics"
	"vwire.dev/sdk/pkg/networkservice/common/updatepath"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/utils/conformance"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/metrictest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hop is the chain under test served over a unix socket: the calls element first, then
// updatepath, begin, metadata, the connections element, and an injector of failures.
type hop struct {
	fail   *inject.Errors
	reader *sdkmetric.ManualReader
	client networkservice.NetworkServiceClient
}

func serve(t testing.TB, opts ...metrics.Option) *hop {
	provider, reader := metrictest.Provider(t)
	h := &hop{fail: inject.NewServer(nil), reader: reader}
	if opts == nil {
		opts = []metrics.Option{metrics.WithMeterProvider(provider)}
	}
	chain := next.NewNetworkServiceServer(
		metrics.NewServer("nse", opts...),
		updatepath.NewServer("nse"),
		begin.NewServer(),
		metadata.NewServer(),
		metrics.NewConnectionsServer("nse", opts...),
		h.fail,
	)
	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "nse.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	errs, err := grpcserve.Serve(ctx, u, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		networkservice.RegisterNetworkServiceServer(s, chain)
	}))
	require.NoError(t, err)
	cc, err := grpc.NewClient("unix://"+u.Path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cc.Close()
		cancel()
		for err := range errs {
			t.Error(err)
		}
	})
	h.client = networkservice.NewNetworkServiceClient(cc)
	return h
}

func request(id, service string) *networkservice.NetworkServiceRequest {
	return &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: id, NetworkService: service}}
}

func TestCountsCallsCodesAndConnections(t *testing.T) {
	h := serve(t)
	ctx := t.Context()
	for _, id := range []string{"c1", "c2", "c3"} {
		_, err := h.client.Request(ctx, request(id, "blue"))
		require.NoError(t, err)
	}
	_, err := h.client.Request(ctx, request("c4", "green"))
	require.NoError(t, err)

	h.fail.FailRequests(status.Error(codes.PermissionDenied, "inject: denied"))
	// A new connection refused, under a service a stranger made up, and c1's refresh: a refused
	// caller's service is not trusted, so both count under none.
	for id, service := range map[string]string{"c5": "made-up", "c1": "blue"} {
		_, err = h.client.Request(ctx, request(id, service))
		require.Equal(t, codes.PermissionDenied, status.Code(err))
	}
	h.fail.FailRequests(nil)
	_, err = h.client.Request(ctx, request("c2", "blue")) // a refresh: no new connection
	require.NoError(t, err)

	for _, id := range []string{"c1", "c3"} {
		_, err = h.client.Close(ctx, &networkservice.Connection{Id: id, NetworkService: "blue"})
		require.NoError(t, err)
	}

	call := func(name, service, code string) string {
		return "vwire.networkservice.server." + name + "{nsm.network_service=" + service + ",rpc.grpc.status_code=" + code + ",vwire.hop=nse}"
	}
	want := map[string]int64{
		"vwire.networkservice.server.connections{nsm.network_service=blue,vwire.hop=nse}":  1,
		"vwire.networkservice.server.connections{nsm.network_service=green,vwire.hop=nse}": 1,
		call("closes", "blue", "OK"): 2,
	}
	for _, name := range []string{"requests", "request.duration"} {
		want[call(name, "blue", "OK")] = 4
		want[call(name, "green", "OK")] = 1
		want[call(name, "", "PERMISSION_DENIED")] = 2
	}
	require.Equal(t, want, metrictest.Collect(t, h.reader))
}

func TestCodeOfContextErrors(t *testing.T) {
	h := serve(t)
	h.fail.FailRequests(context.DeadlineExceeded) // not a status: counted as the code gRPC gives it
	_, err := h.client.Request(t.Context(), request("c1", "blue"))
	require.Error(t, err)
	attrs := "{nsm.network_service=blue,rpc.grpc.status_code=DEADLINE_EXCEEDED,vwire.hop=nse}"
	require.Equal(t, map[string]int64{
		"vwire.networkservice.server.requests" + attrs:         1,
		"vwire.networkservice.server.request.duration" + attrs: 1,
	}, metrictest.Collect(t, h.reader))
}

func TestClientCountsWhatItSends(t *testing.T) {
	h := serve(t)
	provider, reader := metrictest.Provider(t)
	c := next.NewNetworkServiceClient(metrics.NewClient("nsc", metrics.WithMeterProvider(provider)), h.client)

	_, err := c.Request(t.Context(), request("c1", "blue"))
	require.NoError(t, err)
	h.fail.FailRequests(status.Error(codes.Unavailable, "inject: away"))
	_, err = c.Request(t.Context(), request("c1", "blue"))
	require.Equal(t, codes.Unavailable, status.Code(err))
	_, err = c.Close(t.Context(), &networkservice.Connection{Id: "c1", NetworkService: "blue"})
	require.NoError(t, err)

	sent := func(name, code string) string {
		return "vwire.networkservice.client." + name + "{nsm.network_service=blue,rpc.grpc.status_code=" + code + ",vwire.hop=nsc}"
	}
	require.Equal(t, map[string]int64{
		sent("requests", "OK"): 1, sent("requests", "UNAVAILABLE"): 1,
		sent("request.duration", "OK"): 1, sent("request.duration", "UNAVAILABLE"): 1,
		sent("closes", "OK"): 1,
	}, metrictest.Collect(t, reader))
}

// pass is an element that only calls the rest of the chain.
type pass struct{}

func (pass) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	return next.Server(ctx).Request(ctx, req)
}

func (pass) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// BenchmarkRequestClose runs a Request and its Close through begin and metadata in-process:
// with two elements that only pass calls on in the metrics elements' places ("bare": what any
// element costs in a chain), with both metrics elements recording to the global provider (none
// set: OpenTelemetry's no-op, as in a component without telemetry), and recording to an SDK
// provider.
func BenchmarkRequestClose(b *testing.B) {
	provider, _ := metrictest.Provider(b)
	sdk := []metrics.Option{metrics.WithMeterProvider(provider)}
	for _, bc := range []struct {
		name string
		opts []metrics.Option // nil: no metrics elements
	}{{"bare", nil}, {"noop", []metrics.Option{}}, {"sdk", sdk}} {
		b.Run(bc.name, func(b *testing.B) {
			chain := []networkservice.NetworkServiceServer{pass{}, begin.NewServer(), metadata.NewServer(), pass{}}
			if bc.opts != nil {
				chain = []networkservice.NetworkServiceServer{metrics.NewServer("nse", bc.opts...),
					begin.NewServer(), metadata.NewServer(), metrics.NewConnectionsServer("nse", bc.opts...)}
			}
			s := next.NewNetworkServiceServer(chain...)
			ctx := context.Background()
			req := request("c1", "blue")
			b.ReportAllocs()
			for b.Loop() {
				conn, err := s.Request(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Close(ctx, conn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestConformance(t *testing.T) {
	provider, _ := metrictest.Provider(t)
	opt := metrics.WithMeterProvider(provider)
	for _, c := range []conformance.Case{
		{Name: "calls", Server: func(context.Context) networkservice.NetworkServiceServer { return metrics.NewServer("nse", opt) }},
		{Name: "connections", Server: func(context.Context) networkservice.NetworkServiceServer {
			return metrics.NewConnectionsServer("nse", opt)
		}},
		{Name: "client", Client: func(context.Context) networkservice.NetworkServiceClient { return metrics.NewClient("nsc", opt) }},
	} {
		c.Request = func() *networkservice.NetworkServiceRequest { return request("c1", "blue") }
		conformance.Run(t, c)
	}
}

// factory keeps the begin.EventFactory of the last Request that passed it.
type factory struct{ events begin.EventFactory }

func (f *factory) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	f.events = begin.FromContext(ctx)
	return next.Server(ctx).Request(ctx, req)
}

func (f *factory) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// TestBackgroundCloseIsCounted: a Close from inside the hop (timeout's, orphan's), which enters
// at begin, ends the connection's count; it is no caller's call, so no Close is counted.
func TestBackgroundCloseIsCounted(t *testing.T) {
	provider, reader := metrictest.Provider(t)
	opt := metrics.WithMeterProvider(provider)
	f := &factory{}
	chain := next.NewNetworkServiceServer(metrics.NewServer("nse", opt), begin.NewServer(), metadata.NewServer(),
		metrics.NewConnectionsServer("nse", opt), f)
	_, err := chain.Request(t.Context(), request("c1", "blue"))
	require.NoError(t, err)
	live := "vwire.networkservice.server.connections{nsm.network_service=blue,vwire.hop=nse}"
	calls := "{nsm.network_service=blue,rpc.grpc.status_code=OK,vwire.hop=nse}"
	want := map[string]int64{
		live: 1,
		"vwire.networkservice.server.requests" + calls:         1,
		"vwire.networkservice.server.request.duration" + calls: 1,
	}
	require.Equal(t, want, metrictest.Collect(t, reader))

	require.NoError(t, f.events.Close(t.Context()))
	want[live] = 0 // and no Close counted
	require.Equal(t, want, metrictest.Collect(t, reader))
}
