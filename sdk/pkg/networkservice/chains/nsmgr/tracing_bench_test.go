package nsmgr_test

import (
	"context"
	"testing"
	"time"

	"vwire.dev/sdk/pkg/networkservice/core/trace"
	"vwire.dev/sdk/pkg/tools/sandbox"
	"vwire.dev/sdk/pkg/tools/telemetry"
	"vwire.dev/sdk/pkg/tools/telemetry/otlptest"
)

// BenchmarkTracedRequestClose is BenchmarkRemoteRequestClose's secure mesh with traces exported,
// as NSM_OPEN_TELEMETRY_ENDPOINT does it: every element a span, the trace context in gRPC
// metadata (otelgrpc's stats handlers), spans batched and sent over OTLP/gRPC to a collector in
// the benchmark's own process, which counts them (spans/op, the mesh's start included). Compare
// with BenchmarkRemoteRequestClose/secure, the cost with traces off.
func BenchmarkTracedRequestClose(b *testing.B) {
	collector := otlptest.StartDiscarding(b)
	tel, err := telemetry.Setup(context.Background(), "nsmgr.test", telemetry.Config{
		OpenTelemetryEndpoint: telemetry.Endpoint(collector.Endpoint()), MetricsExportInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	trace.Configure(telemetry.Tracing(), false)
	b.Cleanup(func() {
		trace.Configure(false, false)
		if err := tel.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	})
	b.Run("secure", func(b *testing.B) {
		before := collector.Count()
		benchMesh(b, sandbox.New(b, 2), 1)
		if err := tel.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(collector.Count()-before)/float64(b.N), "spans/op")
	})
}
