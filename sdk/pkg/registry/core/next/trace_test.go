package next_test

import (
	"context"
	"errors"
	"testing"

	"github.com/networkservicemesh/api/pkg/api/registry"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/registry/core/next"
	"vwire.dev/sdk/pkg/registry/utils/inject"
)

// TestTracedChain: with tracing on when a chain is built, each element's call is a span under
// the caller's, and the element that failed is marked as the error's origin.
func TestTracedChain(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	otel.SetTracerProvider(provider)
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	trace.Configure(true, false)
	t.Cleanup(func() { trace.Enable(false) })

	fail := inject.NewNSE(nil)
	chain := next.Chain(next.NSE(mark[*registry.NetworkServiceEndpoint]{"a", nseURL}), fail)
	trace.Enable(false)

	ctx, root := otel.Tracer("test").Start(context.Background(), "register")
	got, err := chain.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-1"})
	require.NoError(t, err)
	require.Equal(t, "a", got.GetUrl(), "the elements ran")
	fail.FailRegisters(errors.New("registry full"))
	_, err = chain.Register(ctx, &registry.NetworkServiceEndpoint{Name: "nse-2"})
	require.EqualError(t, err, "registry full")
	require.NoError(t, chain.Find(ctx, &next.Query[*registry.NetworkServiceEndpoint]{Record: &registry.NetworkServiceEndpoint{}}, nil))
	root.End()

	type seen struct{ name, id, origin string }
	var all []seen
	for _, s := range spans.Ended() {
		if s.Name() == "register" {
			continue
		}
		require.Equal(t, root.SpanContext().TraceID(), s.SpanContext().TraceID(), "one trace")
		v := seen{name: s.Name()}
		for _, a := range s.Attributes() {
			switch a.Key {
			case "vwire.id":
				v.id = a.Value.AsString()
			case trace.OriginKey:
				v.origin = a.Value.String()
			}
		}
		all = append(all, v)
	}
	require.ElementsMatch(t, []seen{
		{"inject.Register", "nse-1", ""}, {"next_test.Register", "nse-1", ""},
		{"inject.Register", "nse-2", "true"}, {"next_test.Register", "nse-2", "false"},
		{"inject.Find", "", ""}, {"next_test.Find", "", ""},
	}, all)
}
