package telemetry_test

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/registry/common/connect"
	"vwire.dev/sdk/pkg/registry/core/adapters"
	regnext "vwire.dev/sdk/pkg/registry/core/next"
	reginject "vwire.dev/sdk/pkg/registry/utils/inject"
	"vwire.dev/sdk/pkg/tools/grpcserve"
	"vwire.dev/sdk/pkg/tools/telemetry"
	"vwire.dev/sdk/pkg/tools/telemetry/otlptest"
)

// caller ends a client chain: it sends the Request over gRPC, as the dial element does.
type caller struct{ cc grpc.ClientConnInterface }

func (c caller) Request(ctx context.Context, req *networkservice.NetworkServiceRequest, opts ...grpc.CallOption) (*networkservice.Connection, error) {
	return networkservice.NewNetworkServiceClient(c.cc).Request(ctx, req, opts...)
}

func (c caller) Close(ctx context.Context, conn *networkservice.Connection, opts ...grpc.CallOption) (*emptypb.Empty, error) {
	return networkservice.NewNetworkServiceClient(c.cc).Close(ctx, conn, opts...)
}

// TestOneTraceAcrossGRPC: a Request over real gRPC (a unix socket) is one trace: the server's
// element spans are under the client's, through the stats handlers' spans; the element that
// failed on the server is the error's origin, and the client's element that made the call
// passed it on.
func TestOneTraceAcrossGRPC(t *testing.T) {
	collector, tel, cc := tracedCall(t, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		networkservice.RegisterNetworkServiceServer(s, chain.NewNetworkServiceServer(inject.NewServer(status.Error(codes.ResourceExhausted, "no addresses left"))))
	}))

	reqCtx, end := telemetry.StartTrace(context.Background(), "requesting")
	id := telemetry.TraceID(reqCtx)
	_, err := chain.NewNetworkServiceClient(caller{cc}).Request(reqCtx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-1"}})
	end(err)
	require.Equal(t, codes.ResourceExhausted, status.Code(err))
	require.NoError(t, tel.Shutdown(context.Background()))

	byName, byID := map[string]otlptest.Span{}, map[string]otlptest.Span{}
	for _, s := range collector.Spans() {
		require.Equal(t, id, s.TraceID, "%s is in the Request's trace", s.Name)
		byName[s.Name], byID[s.SpanID] = s, s
	}
	// From the failing element up to the root: the server's element, the stats handlers' spans
	// of the server and of the client, the client's element, the client's own root.
	var path []string
	for s, ok := byName["inject.Request"], true; ok; s, ok = byID[s.ParentID] {
		path = append(path, s.Name)
	}
	require.Equal(t, []string{"inject.Request", "networkservice.NetworkService/Request", "networkservice.NetworkService/Request",
		"telemetry_test.Request", "requesting"}, path)
	require.Equal(t, "true", byName["inject.Request"].Attrs[string(trace.OriginKey)], "the server's failing element began the error")
	require.Equal(t, "false", byName["telemetry_test.Request"].Attrs[string(trace.OriginKey)], "the client's caller passed it on")
}

// TestStreamErrorPassedOn: a registry Find is a stream, whose error arrives at a read, not at
// the call: the client's element that made the Find passed on what the registry's element
// began, as for a unary call.
func TestStreamErrorPassedOn(t *testing.T) {
	fail := reginject.NewNSE(nil)
	fail.FailFinds(status.Error(codes.NotFound, "no such endpoint"))
	collector, tel, cc := tracedCall(t, grpcserve.RegistrarFunc(func(s *grpc.Server) {
		registry.RegisterNetworkServiceEndpointRegistryServer(s, adapters.NSEServer(regnext.Chain[*registry.NetworkServiceEndpoint](fail)))
	}))

	findCtx, end := telemetry.StartTrace(context.Background(), "finding")
	err := regnext.Chain(connect.NewNSE(cc)).Find(findCtx, &regnext.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}},
		func(*regnext.Event[*registry.NetworkServiceEndpoint]) error { return nil })
	end(err)
	require.Equal(t, codes.NotFound, status.Code(err))
	require.NoError(t, tel.Shutdown(context.Background()))

	origins := map[string]string{}
	for _, s := range collector.Spans() {
		origins[s.Name] = s.Attrs[string(trace.OriginKey)]
	}
	require.Equal(t, "true", origins["inject.Find"], "the registry's failing element began the error")
	require.Equal(t, "false", origins["connect.Find"], "the client's connect passed it on")
}

// tracedCall exports traces to a collector of the test's own, serves what register registers on
// a unix socket, and returns the collector, the telemetry to shut down (which flushes the spans)
// and a client connection to the server carrying the trace context.
func tracedCall(t *testing.T, register grpcserve.Registrar) (*otlptest.Receiver, *telemetry.Telemetry, *grpc.ClientConn) {
	t.Helper()
	collector := otlptest.Start(t)
	tel, err := telemetry.Setup(context.Background(), "cmd-test", telemetry.Config{
		OpenTelemetryEndpoint: telemetry.Endpoint(collector.Endpoint()), MetricsExportInterval: time.Hour})
	require.NoError(t, err)
	trace.Configure(telemetry.Tracing(), false)
	t.Cleanup(func() { trace.Enable(false) })

	dir, err := os.MkdirTemp("", "vw")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	u := &url.URL{Scheme: "unix", Path: filepath.Join(dir, "server.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	served, err := grpcserve.Serve(ctx, u, register)
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		for range served {
		}
	})
	cc, err := grpc.NewClient("unix://"+u.Path, append(telemetry.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return collector, tel, cc
}
