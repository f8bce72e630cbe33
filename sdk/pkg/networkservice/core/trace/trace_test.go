package trace_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"vwire.dev/sdk/pkg/networkservice/core/adapters"
	"vwire.dev/sdk/pkg/networkservice/core/chain"
	"vwire.dev/sdk/pkg/networkservice/core/next"
	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/networkservice/utils/inject"
	"vwire.dev/sdk/pkg/tools/log"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// labeler sets a label on the way in and the MTU on the way out.
type labeler struct{}

func (labeler) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	req.GetConnection().Labels = map[string]string{"app": "web"}
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, err
	}
	conn.Context = &networkservice.ConnectionContext{MTU: 1400}
	return conn, nil
}

func (labeler) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func TestTracedChainLogsChangesAndRecordsSpans(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	otel.SetTracerProvider(provider)
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	trace.Enable(true)
	t.Cleanup(func() { trace.Enable(false) })

	fail := inject.NewServer(nil)
	server := chain.NewNetworkServiceServer(labeler{}, fail)
	var out bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))

	_, err := server.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-1"}})
	require.NoError(t, err)
	logged := out.String()
	require.Contains(t, logged, `element=trace_test`)
	require.Contains(t, logged, `msg="request changed"`)
	require.Contains(t, logged, `connection.labels[\"app\"]: + \"web\"`)
	require.Contains(t, logged, `msg="reply changed"`)
	require.Contains(t, logged, `context.MTU: + \"1400\"`)

	fail.FailRequests(errors.New("no capacity"))
	_, err = server.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-2"}})
	require.Error(t, err)
	require.Contains(t, out.String(), "error=\"no capacity\"")

	var names []string
	for _, s := range spans.Ended() {
		names = append(names, s.Name())
	}
	require.Contains(t, names, "trace_test.Request")
	require.Contains(t, names, "inject.Request")
}

func TestUntracedChainRunsElementsBare(t *testing.T) {
	trace.Enable(false)
	var out bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	_, err := chain.NewNetworkServiceServer(labeler{}).Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
	require.NoError(t, err)
	require.Empty(t, out.String())
}

func TestTracedClientChain(t *testing.T) {
	trace.Enable(true)
	t.Cleanup(func() { trace.Enable(false) })
	var out bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	client := chain.NewNetworkServiceClient(adapters.NewServerToClient(labeler{}))
	conn, err := client.Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c"}})
	require.NoError(t, err)
	_, err = client.Close(ctx, conn)
	require.NoError(t, err)
	require.Contains(t, out.String(), `element=adapters`)
	require.Contains(t, out.String(), `connection.labels[\"app\"]: + \"web\"`)
}

func TestDiff(t *testing.T) {
	a := &networkservice.Connection{Id: "x", State: networkservice.State_UP, Labels: map[string]string{"k": "1", "gone": "y"}}
	b := &networkservice.Connection{Id: "x", State: networkservice.State_DOWN, Labels: map[string]string{"k": "2"}}
	require.Equal(t, "labels[\"gone\"]: - \"y\"\nlabels[\"k\"]: \"1\" -> \"2\"\nstate: + DOWN", trace.Diff(a, b))
	require.Empty(t, trace.Diff(a, a))
}
