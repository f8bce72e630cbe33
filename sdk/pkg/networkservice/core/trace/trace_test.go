package trace_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/networkservice"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// record installs a TracerProvider whose spans it records, and turns tracing on (spans, and
// change lines or not) until the test ends.
func record(t *testing.T, changes bool) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	otel.SetTracerProvider(provider)
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	trace.Configure(true, changes)
	t.Cleanup(func() { trace.Enable(false) })
	return provider, spans
}

func TestTracedChainLogsChangesAndRecordsSpans(t *testing.T) {
	_, spans := record(t, true)

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

// wrapper passes the rest of the chain's error on, wrapped; annotator, as a status of its own
// that repeats it; replacer makes an error of its own.
type (
	wrapper   struct{}
	annotator struct{}
	replacer  struct{}
)

func (annotator) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "annotator: next hop x: %s", status.Convert(err).Message())
	}
	return conn, nil
}

func (annotator) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (wrapper) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	conn, err := next.Server(ctx).Request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("wrapper: %w", err)
	}
	return conn, nil
}

func (wrapper) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

func (replacer) Request(ctx context.Context, req *networkservice.NetworkServiceRequest) (*networkservice.Connection, error) {
	if _, err := next.Server(ctx).Request(ctx, req); err != nil {
		return nil, errors.New("replacer: no luck")
	}
	return nil, errors.New("replacer: refused")
}

func (replacer) Close(ctx context.Context, conn *networkservice.Connection) (*emptypb.Empty, error) {
	return next.Server(ctx).Close(ctx, conn)
}

// TestErrorMarksItsOrigin: the span of the element that made the error says so; those it went
// through say they passed it on, whether they returned it as it came or wrapped it. Spans alone
// (traces exported, not TRACE) write no log line.
func TestErrorMarksItsOrigin(t *testing.T) {
	provider, spans := record(t, false)

	var out bytes.Buffer
	ctx := log.WithLogger(context.Background(), slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})))
	origin := func() map[string][]string { // the marks of the spans of each name, innermost first
		marks := map[string][]string{}
		for _, s := range spans.Ended() {
			for _, a := range s.Attributes() {
				if a.Key == trace.OriginKey {
					marks[s.Name()] = append(marks[s.Name()], a.Value.String()+" "+s.Status().Description)
				}
			}
		}
		return marks
	}

	_, err := chain.NewNetworkServiceServer(labeler{}, annotator{}, wrapper{}, inject.NewServer(status.Error(codes.Unavailable, "no capacity"))).
		Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-1"}})
	require.EqualError(t, err, "rpc error: code = Unavailable desc = annotator: next hop x: wrapper: rpc error: code = Unavailable desc = no capacity")
	require.Equal(t, map[string][]string{
		"inject.Request": {"true rpc error: code = Unavailable desc = no capacity"},
		"trace_test.Request": { // wrapper, annotator, labeler
			"false passed on: wrapper: rpc error: code = Unavailable desc = no capacity",
			"false passed on: " + err.Error(),
			"false passed on: " + err.Error(),
		},
	}, origin())
	require.Empty(t, out.String(), "no change lines below TRACE")

	spans = tracetest.NewSpanRecorder()
	provider.RegisterSpanProcessor(spans)
	_, err = chain.NewNetworkServiceServer(replacer{}, inject.NewServer(errors.New("no capacity"))).
		Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-2"}})
	require.EqualError(t, err, "replacer: no luck")
	require.Equal(t, map[string][]string{"inject.Request": {"true no capacity"}, "trace_test.Request": {"true replacer: no luck"}}, origin(),
		"an element that replaces the error it got is where its own began")

	spans = tracetest.NewSpanRecorder()
	provider.RegisterSpanProcessor(spans)
	ctx, client := otel.Tracer("test").Start(ctx, "client")
	trace.PassedOn(ctx, errors.New("not a step: ignored"))
	client.End()
	_, err = chain.NewNetworkServiceServer(labeler{}).Request(ctx, &networkservice.NetworkServiceRequest{Connection: &networkservice.Connection{Id: "c-3"}})
	require.NoError(t, err)
	require.Empty(t, origin(), "success marks nothing")
}
